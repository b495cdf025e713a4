"""Document uploads read in a bounded worker: hostile files answer 415/422 saying what to do,
and nothing a store cannot hold gets through (a real gateway process)."""

from __future__ import annotations

import io

import httpx
import pytest
from pypdf import PdfWriter

pytestmark = [
    pytest.mark.platform_services("gateway", "orchestrator"),
    pytest.mark.platform_env(RUNLOOM_PARSE_TIMEOUT_S="5"),
]


def _pdf(*, password: str | None = None) -> bytes:
    writer = PdfWriter()
    writer.add_blank_page(200, 200)
    if password:
        writer.encrypt(password, algorithm="RC4-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def _text_pdf(title: bytes) -> bytes:
    """A one-page PDF saying a sentence, whose /Info /Title is the raw PDF object `title`."""
    stream = b"BT /F1 12 Tf 20 100 Td (Runloom reads this sentence from the page.) Tj ET"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 300 200] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Title " + title + b" >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R /Info 6 0 R >>\n" % (len(objects) + 1)
    out += b"startxref\n%d\n%%%%EOF\n" % xref
    return bytes(out)


async def _upload(c: httpx.AsyncClient, name: str, data: bytes) -> httpx.Response:
    return await c.post("/v1/documents", files={"file": (name, data)})


async def test_hostile_files_answer_what_to_do(platform) -> None:
    async with httpx.AsyncClient(
        base_url=platform.url, headers=platform.headers(), timeout=60
    ) as c:
        for name, data, status, words in [
            ("locked.pdf", _pdf(password="secret"), 422, "encrypted (password-protected)"),
            ("broken.pdf", b"%PDF-1.7\n1 0 obj << /Kids [", 422, "not a readable PDF"),
            ("empty.pdf", _pdf(), 422, "no text to index"),
            ("notes.exe", b"MZ", 415, "not a supported file type"),
            ("latin1.txt", "caf\u00e9".encode("latin-1"), 422, "not UTF-8"),
            ("huge.html", b"<p>" + b"<b>x</b>" * 2_500_000, 422, "took longer than 5 s"),
        ]:
            r = await _upload(c, name, data)
            assert r.status_code == status, f"{name}: {r.status_code} {r.text[:300]}"
            assert r.headers["content-type"].startswith("application/problem+json")
            assert words in r.json()["detail"], f"{name}: {r.json()['detail']}"
        assert (await c.get("/readyz")).status_code == 200
        assert (await c.get("/v1/documents")).json()["total"] == 0


async def test_odd_titles_and_nul_characters_are_stripped(platform) -> None:
    async with httpx.AsyncClient(
        base_url=platform.url, headers=platform.headers(), timeout=60
    ) as c:
        raw = (
            b'--B\r\nContent-Disposition: form-data; name="file"; filename="no\x00tes.txt"\r\n'
            b"Content-Type: text/plain\r\n\r\nSome text with a NUL \x00 inside it.\r\n--B--\r\n"
        )
        r = await c.post(
            "/v1/documents",
            content=raw,
            headers={"Content-Type": "multipart/form-data; boundary=B"},
        )
        assert r.status_code == 201, r.text
        doc = r.json()["documents"][0]
        assert "\x00" not in doc["title"] and doc["title"] == "notes"
        for raw, title in [
            (b"42", "titled"),
            (b"<< /A 1 >>", "titled"),
            (b"(Ti\\000tle)", "titled"),
            (b"(A fine title)", "A fine title"),
        ]:
            r = await _upload(c, "titled.pdf", _text_pdf(raw))
            assert r.status_code == 201, f"{raw!r}: {r.text}"
            assert r.json()["documents"][0]["title"] == title, raw
