"""Documents: the tenant's research corpus. Upload (multipart or JSON), list, delete.

Multipart uploads take `.txt`, `.md`, `.html`/`.htm` and `.pdf` files (field `file`, one or
more); JSON takes `{"title", "text", "url"?}`. Text is extracted here, then chunked and
indexed for full-text search by the corpus module the orchestrator searches.
"""

from __future__ import annotations

import asyncio
import io
from html.parser import HTMLParser
from pathlib import PurePath
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from runloom.corpus import store as corpus
from runloom.gateway.auth import Principal, principal
from runloom.gateway.problems import Problem, not_found
from runloom.gateway.state import GatewayState, get_state

router = APIRouter(prefix="/v1/documents", tags=["documents"])

MAX_FILE_BYTES = 20 * 1024 * 1024
MAX_FILES = 20
TYPES = {
    ".txt": "text/plain",
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".html": "text/html",
    ".htm": "text/html",
    ".pdf": "application/pdf",
}


class DocumentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=300)
    text: str = Field(min_length=1)
    url: str | None = Field(default=None, max_length=2000)


def _bad(detail: str, status: int = 422, title: str = "Invalid document") -> Problem:
    return Problem(status, title, detail, type="https://runloom.dev/problems/invalid-document")


class _HTMLText(HTMLParser):
    """Visible text of an HTML page (scripts and styles skipped), and its <title>."""

    SKIP = frozenset({"script", "style", "noscript", "template", "svg"})
    BLOCK = frozenset(
        {
            "p",
            "div",
            "br",
            "li",
            "ul",
            "ol",
            "h1",
            "h2",
            "h3",
            "h4",
            "h5",
            "h6",
            "tr",
            "pre",
            "section",
            "article",
            "header",
            "footer",
            "blockquote",
            "table",
            "hr",
        }
    )

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title = ""
        self._skip = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in self.SKIP:
            self._skip += 1
        elif tag == "title":
            self._in_title = True
        elif tag in self.BLOCK:
            self.parts.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP and self._skip:
            self._skip -= 1
        elif tag == "title":
            self._in_title = False
        elif tag in self.BLOCK:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        if self._in_title:
            self.title += data
            return
        self.parts.append(data)


def extract(filename: str, data: bytes) -> tuple[str, str, str]:
    """(title, text, media_type) of an uploaded file; Problem for what cannot be read."""
    suffix = PurePath(filename).suffix.lower()
    media_type = TYPES.get(suffix)
    if media_type is None:
        raise _bad(
            f"{filename!r} is not a supported file type; upload .txt, .md, .html or .pdf "
            '(or send JSON {"title", "text"}).',
            status=415,
            title="Unsupported document type",
        )
    stem = PurePath(filename).stem or filename
    if suffix == ".pdf":
        from pypdf import PdfReader
        from pypdf.errors import PdfReadError

        try:
            reader = PdfReader(io.BytesIO(data))
            text = "\n\n".join((page.extract_text() or "") for page in reader.pages)
            meta_title = (reader.metadata.title if reader.metadata else None) or ""
        except (PdfReadError, ValueError, KeyError, TypeError) as exc:
            raise _bad(f"{filename!r} is not a readable PDF ({exc}).") from exc
        return (meta_title.strip() or stem), text, media_type
    try:
        raw = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _bad(f"{filename!r} is not UTF-8 text (byte {exc.start} is invalid).") from exc
    if media_type == "text/html":
        parser = _HTMLText()
        parser.feed(raw)
        parser.close()
        return (parser.title.strip() or stem), "".join(parser.parts), media_type
    if media_type == "text/markdown":
        for line in raw.splitlines():
            if line.startswith("# "):
                return line[2:].strip() or stem, raw, media_type
    return stem, raw, media_type


async def _add(
    state: GatewayState, who: Principal, title: str, text: str, url: str | None, media_type: str
) -> dict[str, Any]:
    try:
        doc = await corpus.add_document(
            state.pool, who.tenant_id, title=title, text=text, url=url, media_type=media_type
        )
    except corpus.CorpusError as exc:
        status = 413 if isinstance(exc, corpus.DocumentTooLarge) else 422
        raise _bad(str(exc), status=status) from exc
    return doc.as_dict()


def _api_only(who: Principal) -> None:
    if who.run_scope is not None:
        raise Problem(401, "Unauthorized", "A stream token only opens its run's event stream.")


@router.post("", status_code=201)
async def upload_documents(
    request: Request,
    state: GatewayState = Depends(get_state),
    who: Principal = Depends(principal),
) -> dict[str, Any]:
    """Add documents: multipart files (`file`), or JSON `{"title","text","url"?}`."""
    _api_only(who)
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "application/json":
        try:
            body = DocumentIn.model_validate_json(await request.body())
        except ValidationError as exc:
            detail = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
            )
            raise _bad(f"The JSON document is invalid: {detail}") from exc
        return await _add(state, who, body.title, body.text, body.url, "text/plain")
    if ctype != "multipart/form-data":
        raise _bad(
            "Send files as multipart/form-data (field 'file') or a JSON document "
            '{"title", "text", "url"?} with Content-Type: application/json.',
            status=415,
            title="Unsupported content type",
        )
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_FILES * MAX_FILE_BYTES:
        raise _bad(
            f"The upload is {int(length) // (1024 * 1024)} MB; at most {MAX_FILES} files of "
            f"{MAX_FILE_BYTES // (1024 * 1024)} MB each fit in one request.",
            status=413,
            title="Upload too large",
        )
    form = await request.form(max_files=MAX_FILES, max_part_size=MAX_FILE_BYTES)
    try:
        uploads = [v for _, v in form.multi_items() if not isinstance(v, str)]
        if not uploads:
            raise _bad("The upload has no file: send one or more files in the field 'file'.")
        out = []
        for upload in uploads:
            data = await upload.read(MAX_FILE_BYTES + 1)
            name = upload.filename or "upload.txt"
            if len(data) > MAX_FILE_BYTES:
                raise _bad(
                    f"{name!r} is larger than {MAX_FILE_BYTES // (1024 * 1024)} MB; split it.",
                    status=413,
                    title="Document too large",
                )
            # PDF and HTML parsing is CPU work: keep it off the loop that serves SSE streams.
            title, text, media_type = await asyncio.to_thread(extract, name, data)
            if not text.strip():
                raise _bad(f"{name!r} has no text to index (empty, or a scanned PDF).")
            out.append(await _add(state, who, title, text, None, media_type))
        return {"documents": out}
    finally:
        await form.close()


@router.get("")
async def list_documents(
    state: GatewayState = Depends(get_state),
    who: Principal = Depends(principal),
    limit: int = Query(default=100, ge=1, le=1000),
    offset: int = Query(default=0, ge=0),
) -> dict[str, Any]:
    """The tenant's documents, newest first."""
    _api_only(who)
    docs, total = await corpus.list_documents(state.pool, who.tenant_id, limit=limit, offset=offset)
    return {"documents": [d.as_dict() for d in docs], "total": total}


@router.delete("/{document_id}", status_code=204)
async def delete_document(
    document_id: str,
    state: GatewayState = Depends(get_state),
    who: Principal = Depends(principal),
) -> Response:
    """Delete a document and its passages (runs that cited it keep their stored sources)."""
    _api_only(who)
    if not await corpus.delete_document(state.pool, who.tenant_id, document_id):
        raise not_found("document", document_id)
    return Response(status_code=204)
