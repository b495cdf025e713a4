"""Documents: the tenant's research corpus. Upload (multipart or JSON), list, delete.

Multipart uploads take `.txt`, `.md`, `.html`/`.htm` and `.pdf` files (field `file`, one or
more); JSON takes `{"title", "text", "url"?}`. Text is extracted here; the orchestrator, which owns
the corpus, stores, chunks, indexes and embeds it (`corpus.*` request/reply, `_corpus`). No
orchestrator answering: 503 with Retry-After.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, ValidationError
from runloom.contracts.commands import MAX_DOCUMENT_CHARS, AddDocumentRequest
from runloom.contracts.ids import new_id
from runloom.gateway import _corpus as corpus
from runloom.gateway._extract import ParseLimits, extract, storable, warm_up
from runloom.gateway._params import (
    MAX_OFFSET,
    DocumentIdPath,
    NonBlankText,
    StorableText,
)
from runloom.gateway._params import (
    text as text_field,
)
from runloom.gateway.auth import Principal, api_only, principal
from runloom.gateway.problems import Problem, not_found, responses
from runloom.gateway.state import GatewayState, get_state
from starlette.exceptions import HTTPException

router = APIRouter(prefix="/v1/documents", tags=["documents"])

MAX_FILE_BYTES = 20 * 1024 * 1024
MAX_FILES = 20
"""One request's whole body is bounded by the edge (`_edge.BODY_LIMITS`)."""


class DocumentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: NonBlankText = text_field(300, "The document's title.", nonblank=True)
    text: NonBlankText = text_field(
        None,
        f"The document's text (over {MAX_DOCUMENT_CHARS:,} characters answers 413).",
        nonblank=True,
    )
    url: StorableText | None = text_field(2000, "Where the document comes from.", optional=True)


def _bad(detail: str, status: int = 422, title: str = "Invalid document") -> Problem:
    return Problem(status, title, detail, type="https://runloom.dev/problems/invalid-document")


def _unreadable(reason: str) -> Problem:
    if reason.startswith(("Too many", "Part exceeded", "Field exceeded")):
        return _bad(
            f"{reason} Send at most {MAX_FILES} files of up to "
            f"{MAX_FILE_BYTES // (1024 * 1024)} MB each per request.",
            status=413,
            title="Upload too large",
        )
    return _bad(
        f"The multipart body could not be read ({reason.rstrip('.')}). Send each file as a part "
        "named 'file' with a Content-Disposition header, e.g. `curl -F file=@notes.txt`."
    )


_LIMITS = ParseLimits.from_env()
_SLOTS = asyncio.Semaphore(_LIMITS.workers)
"""Parse workers running at once in this process."""


async def startup(state: GatewayState) -> None:
    # Not awaited: readiness does not wait for the parse workers' forkserver.
    _warming.append(asyncio.get_running_loop().run_in_executor(None, warm_up))


_warming: list[asyncio.Future[None]] = []


async def _add(
    state: GatewayState, who: Principal, title: str, text: str, url: str | None, media_type: str
) -> dict[str, Any]:
    req = AddDocumentRequest(
        document_id=new_id("doc"),
        tenant_id=who.tenant_id,
        title=title,
        media_type=media_type,
        url=url,
    )
    reply = await corpus.add(state.nc, state.js, req, text)
    if reply.document is None:
        status = 413 if reply.refused == "too_large" else 422
        raise _bad(reply.detail or "The document was refused.", status=status)
    return corpus.as_json(reply.document)


_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "file": {"type": "array", "items": {"type": "string", "format": "binary"}}
                    },
                    "required": ["file"],
                }
            },
            "application/json": {"schema": DocumentIn.model_json_schema()},
        },
    }
}


@router.post("", status_code=201, responses=responses(415), openapi_extra=_UPLOAD_BODY)
async def upload_documents(
    request: Request,
    state: GatewayState = Depends(get_state),
    who: Principal = Depends(principal),
) -> dict[str, Any]:
    """Add documents: multipart files (`file`), or JSON `{"title","text","url"?}`."""
    api_only(who)
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
    try:
        form = await request.form(max_files=MAX_FILES, max_part_size=MAX_FILE_BYTES)
    except HTTPException as exc:  # Starlette's 400 for a body its multipart parser refuses
        raise _unreadable(str(exc.detail)) from exc
    try:
        uploads = [v for _, v in form.multi_items() if not isinstance(v, str)]
        if not uploads:
            raise _bad("The upload has no file: send one or more files in the field 'file'.")
        out = []
        for upload in uploads:
            data = await upload.read(MAX_FILE_BYTES + 1)
            name = storable(upload.filename or "") or "upload.txt"
            if len(data) > MAX_FILE_BYTES:
                raise _bad(
                    f"{name!r} is larger than {MAX_FILE_BYTES // (1024 * 1024)} MB; split it.",
                    status=413,
                    title="Document too large",
                )
            title, body_text, media_type = await extract(name, data, _LIMITS, _SLOTS)
            if not body_text.strip():
                raise _bad(f"{name!r} has no text to index (empty, or a scanned PDF).")
            out.append(await _add(state, who, title, body_text, None, media_type))
        return {"documents": out}
    finally:
        await form.close()


@router.get("", responses=responses())
async def list_documents(
    state: GatewayState = Depends(get_state),
    who: Principal = Depends(principal),
    limit: int = Query(default=100, ge=1, le=1000),
    offset: int = Query(default=0, ge=0, le=MAX_OFFSET),
) -> dict[str, Any]:
    """The tenant's documents, newest first."""
    api_only(who)
    page = await corpus.list_documents(state.nc, who.tenant_id, limit, offset)
    return {"documents": [corpus.as_json(d) for d in page.documents], "total": page.total}


@router.delete("/{document_id}", status_code=204, responses=responses(404))
async def delete_document(
    document_id: DocumentIdPath,
    state: GatewayState = Depends(get_state),
    who: Principal = Depends(principal),
) -> Response:
    """Delete a document and its passages (runs that cited it keep their stored sources)."""
    api_only(who)
    if not await corpus.delete(state.nc, who.tenant_id, document_id):
        raise not_found("document", document_id)
    return Response(status_code=204)
