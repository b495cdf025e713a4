"""The corpus over HTTP: upload (multipart and JSON), list, delete, per tenant; bad input."""

from __future__ import annotations

import asyncio
import io
import uuid

import httpx
import pytest
from runloom.corpus import embed, hybrid
from runloom.devkit.runs import sse_events
from runloom.gateway.store.tenants import create_tenant

pytestmark = pytest.mark.platform_services("gateway", "billing", "orchestrator")

HTML = b"""<html><head><title>Otter field notes</title><style>p{color:red}</style></head>
<body><h1>Otters</h1><p>Sea otters crack shellfish open with stones they keep in a skin pouch.
River otters hunt fish at night in clear streams.</p><script>var x = 1;</script></body></html>"""


def _pdf(text: str) -> bytes:
    """A one-page PDF holding `text` (pypdf's writer; the reader extracts it back)."""
    from pypdf import PdfWriter
    from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject

    writer = PdfWriter()
    page = writer.add_blank_page(width=612, height=792)
    font = DictionaryObject(
        {
            NameObject("/Type"): NameObject("/Font"),
            NameObject("/Subtype"): NameObject("/Type1"),
            NameObject("/BaseFont"): NameObject("/Helvetica"),
        }
    )
    page[NameObject("/Resources")] = DictionaryObject(
        {NameObject("/Font"): DictionaryObject({NameObject("/F1"): writer._add_object(font)})}
    )
    stream = DecodedStreamObject()
    stream.set_data(f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode())
    page[NameObject("/Contents")] = writer._add_object(stream)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


async def test_upload_list_search_and_delete(platform, pool) -> None:
    h = platform.headers()
    url = f"{platform.url}/v1/documents"
    async with httpx.AsyncClient(timeout=30) as client:
        files = [
            ("file", ("otters.html", HTML, "text/html")),
            (
                "file",
                (
                    "beavers.md",
                    b"# Beaver notes\n\nBeavers build dams of branches "
                    b"and mud across slow streams.\n",
                    "text/markdown",
                ),
            ),
            (
                "file",
                (
                    "herons.pdf",
                    _pdf("Grey herons stand still in shallow water for fish."),
                    "application/pdf",
                ),
            ),
        ]
        resp = await client.post(url, files=files, headers=h)
        assert resp.status_code == 201, resp.text
        docs = resp.json()["documents"]
        assert [d["title"] for d in docs] == ["Otter field notes", "Beaver notes", "herons"]
        resp = await client.post(
            url, json={"title": "Kingfishers", "text": "Kingfishers dive for fish."}, headers=h
        )
        assert resp.status_code == 201 and resp.json()["chunk_count"] == 1
        listed = (await client.get(url, headers=h)).json()
        assert listed["total"] == 4
        # Another tenant sees none of it and cannot delete it; no key, no access.
        other_key = await create_tenant(pool, f"t-{uuid.uuid4().hex[:10]}", "other")
        other = {"Authorization": f"Bearer {other_key}"}
        assert (await client.get(url, headers=other)).json()["total"] == 0
        assert (await client.delete(f"{url}/{docs[0]['id']}", headers=other)).status_code == 404
        nobody = await client.get(url, headers={"Authorization": "Bearer rlk_nope"})
        assert nobody.status_code == 401
        # The orchestrator's job embeds what was stored; then the documents are found by meaning
        # (the question names neither otters nor shellfish).
        ids = [d["id"] for d in docs]
        async with asyncio.timeout(60):
            while await pool.fetchval(
                "SELECT count(*) FROM chunks c WHERE c.document_id = ANY($1) AND NOT EXISTS"
                " (SELECT 1 FROM chunk_embeddings e WHERE e.chunk_id = c.id)",
                ids,
            ):
                await asyncio.sleep(0.1)
        tenant = await pool.fetchval("SELECT tenant_id FROM documents WHERE id=$1", ids[0])
        vector = embed.shared().embed_one("Which furry swimmers use rocks to open clams?")
        near = await hybrid.search(pool, tenant, "", vector, limit=1)
        assert [h.title for h in near] == ["Otter field notes"]
        # A run researches the uploaded documents (and cites them).
        run = await client.post(
            f"{platform.url}/v1/runs",
            json={
                "question": "How do otters and herons catch fish?",
                "options": {"deliverables": []},
            },
            headers=h,
        )
        events, _ = await sse_events(client, platform.url, run.json()["id"], h)
        titles = {e["data"]["title"] for e in events if e["type"] == "source.found"}
        assert "Otter field notes" in titles
        assert events[-1]["type"] == "run.completed"
        found = next(
            e
            for e in events
            if e["type"] == "source.found" and e["data"]["title"] == "Otter field notes"
        )
        assert (
            "var x" not in found["data"]["passage"] and "color:red" not in found["data"]["passage"]
        )
        gone = await client.delete(f"{url}/{docs[0]['id']}", headers=h)
        assert gone.status_code == 204
        again = await client.delete(f"{url}/{docs[0]['id']}", headers=h)
        assert again.status_code == 404
        assert again.headers["content-type"].startswith("application/problem+json")
        assert (await client.get(url, headers=h)).json()["total"] == 3


BAD = [
    ({"files": [("file", ("a.exe", b"MZ", "application/octet-stream"))]}, 415, ".pdf"),
    ({"files": [("file", ("a.txt", b"  \n ", "text/plain"))]}, 422, "no text"),
    ({"files": [("file", ("a.txt", b"\xff\xfe\x00bad", "text/plain"))]}, 422, "UTF-8"),
    ({"files": [("file", ("a.pdf", b"not a pdf", "application/pdf"))]}, 422, "PDF"),
    ({"json": {"title": "t", "text": ""}}, 422, "text"),
    ({"json": {"title": "t", "text": "x", "owner": "me"}}, 422, "owner"),
    ({"json": {"title": "Big", "text": "word " * 400_001}}, 413, "limit"),
    ({"content": b"hello", "headers": {"Content-Type": "text/plain"}}, 415, "multipart"),
]


async def test_bad_uploads_get_a_clear_problem(platform) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        for kwargs, status, words in BAD:
            kw = dict(kwargs)
            headers = {**platform.headers(), **kw.pop("headers", {})}
            resp = await client.post(f"{platform.url}/v1/documents", headers=headers, **kw)
            assert resp.status_code == status, (kwargs, resp.text)
            assert resp.headers["content-type"].startswith("application/problem+json")
            assert words in resp.json()["detail"], resp.json()


OTTERS = (
    "Sea otters float on their backs and crack shellfish open on a stone held on the chest. "
    "Each otter keeps a favourite stone in a loose pouch of skin under its forelimb. "
    "River otters dive after fish in clear streams and hunt mostly at night. "
)


@pytest.mark.platform_env(RUNLOOM_CORPUS_INLINE_MAX_BYTES="2048")
async def test_a_large_upload_travels_as_an_object_and_a_run_cites_it(platform, js) -> None:
    """Text larger than one request message goes through the object store; the orchestrator
    stores it, removes the object, and a run researches and cites it."""
    from runloom.contracts import subjects

    h = platform.headers()
    text = "\n\n".join(f"Field note {i}. {OTTERS.strip()}" for i in range(60))  # ~15 KB
    async with httpx.AsyncClient(timeout=60) as client:
        resp = await client.post(
            f"{platform.url}/v1/documents",
            json={"title": "Otter field guide", "text": text},
            headers=h,
        )
        assert resp.status_code == 201, resp.text
        doc = resp.json()
        assert doc["size_chars"] == len(text) and doc["chunk_count"] > 1
        bucket = await js.object_store(subjects.CORPUS_UPLOADS_BUCKET)
        info = await bucket.get_info(doc["id"], show_deleted=True)
        assert info.deleted  # the text came as an object, deleted once stored
        run = await client.post(
            f"{platform.url}/v1/runs",
            json={"question": "How do sea otters open shellfish?", "options": {"deliverables": []}},
            headers=h,
        )
        events, _ = await sse_events(client, platform.url, run.json()["id"], h)
    assert events[-1]["type"] == "run.completed", events[-1]
    guide = {
        e["data"]["source_id"]
        for e in events
        if e["type"] == "source.found" and e["data"]["title"] == "Otter field guide"
    }
    content = next(e for e in events if e["type"] == "content.stored")["data"]["content"]
    cited = {
        c["source_id"] for s in content["sections"] for cl in s["claims"] for c in cl["citations"]
    }
    assert guide & cited, content


@pytest.mark.platform_services("gateway")
async def test_documents_answer_503_with_retry_after_until_an_orchestrator_runs(platform) -> None:
    h = platform.headers()
    url = f"{platform.url}/v1/documents"
    async with httpx.AsyncClient(timeout=30) as client:
        for method, path, kwargs in [
            ("POST", url, {"json": {"title": "Kingfishers", "text": "Kingfishers dive."}}),
            ("POST", url, {"files": [("file", ("k.md", b"# Kingfishers\n\nThey dive.\n"))]}),
            ("GET", url, {}),
            ("DELETE", f"{url}/doc_01JD6Q0W7XKZ3T9M4N5P6R8S2V", {}),
        ]:
            r = await client.request(method, path, headers=h, **kwargs)
            assert r.status_code == 503, (method, r.status_code, r.text)
            assert r.headers["content-type"].startswith("application/problem+json")
            assert int(r.headers["retry-after"]) > 0
            assert "no orchestrator replica is running" in r.json()["detail"]
        assert (await client.get(f"{platform.url}/readyz")).status_code == 200
        platform.add("orchestrator")
        await asyncio.to_thread(platform.wait_all_ready, 90.0)  # its corpus responders run
        resp = await client.post(
            url, json={"title": "Kingfishers", "text": "Kingfishers dive."}, headers=h
        )
        assert resp.status_code == 201, resp.text
        assert (await client.get(url, headers=h)).json()["total"] == 1
