"""The corpus's client: the orchestrator owns the documents; the gateway asks it over NATS.

`corpus.add|list|delete` are core NATS request/reply. A document's text rides in the request
when it fits in one message (the server's `max_payload`); larger text goes first into the
`corpus-uploads` object store and the request names the object. When no orchestrator answers
(none running, or too slow), the routes answer 503 with `Retry-After`, never a 500. The
requests go through the one requester (`runtime.request`), with the timeouts of their
operations (`contracts.operations`).
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec
import nats.errors
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from runloom.contracts import operations as ops
from runloom.contracts import subjects
from runloom.contracts.commands import (
    AddDocumentReply,
    AddDocumentRequest,
    CorpusDocument,
    DeleteDocumentRequest,
    ListDocumentsReply,
    ListDocumentsRequest,
)
from runloom.contracts.types import rfc3339
from runloom.gateway.problems import Problem, answer_of
from runloom.runtime.config import env_float

Q = TypeVar("Q", bound=msgspec.Struct)
R = TypeVar("R", bound=msgspec.Struct)

RETRY_AFTER_S = 5
HEADROOM = 8 * 1024
"""Bytes of a message kept for headers (trace context) below the server's max_payload."""
INLINE_MAX_BYTES = int(env_float("RUNLOOM_CORPUS_INLINE_MAX_BYTES", 1024 * 1024))
"""A request larger than this (or than the server's max_payload) sends its text as an object:
one big core NATS message holds up everything else on the connection meanwhile."""

_encoder = msgspec.json.Encoder()


def unavailable(why: str) -> Problem:
    problem = Problem(
        503,
        "Corpus unavailable",
        f"The documents cannot be reached right now ({why}); retry in {RETRY_AFTER_S} s.",
        type="https://runloom.dev/problems/corpus-unavailable",
    )
    problem.headers["Retry-After"] = str(RETRY_AFTER_S)
    return problem


async def add(
    nc: NATS, js: JetStreamContext, req: AddDocumentRequest, text: str
) -> AddDocumentReply:
    """Store `text` as the document `req` describes (the text inline or as an object)."""
    req.text = text
    if len(_encoder.encode(req)) > min(INLINE_MAX_BYTES, nc.max_payload - HEADROOM):
        req.text, req.text_object = None, req.document_id
        try:
            bucket = await js.object_store(subjects.CORPUS_UPLOADS_BUCKET)
            await bucket.put(req.document_id, text.encode())
        except (TimeoutError, nats.errors.Error) as exc:
            raise unavailable(f"the upload bucket did not take the text: {exc!r}") from exc
    return await answer_of(nc, ops.CORPUS_ADD, req, unavailable)


async def list_documents(nc: NATS, tenant_id: str, limit: int, offset: int) -> ListDocumentsReply:
    req = ListDocumentsRequest(tenant_id=tenant_id, limit=limit, offset=offset)
    return await answer_of(nc, ops.CORPUS_LIST, req, unavailable)


async def delete(nc: NATS, tenant_id: str, document_id: str) -> bool:
    req = DeleteDocumentRequest(tenant_id=tenant_id, document_id=document_id)
    reply = await answer_of(nc, ops.CORPUS_DELETE, req, unavailable)
    return reply.deleted


def as_json(doc: CorpusDocument) -> dict[str, Any]:
    """A document as the API shows it."""
    return {
        "id": doc.id,
        "title": doc.title,
        "url": doc.url,
        "media_type": doc.media_type,
        "origin": doc.origin,
        "size_chars": doc.size_chars,
        "chunk_count": doc.chunk_count,
        "created_at": rfc3339(doc.created_at),
    }
