"""The corpus's owner: `corpus.add|list|delete` over core NATS request/reply; and
`erase.orchestrator`, where the orchestrator removes its own rows of an erasure (a whole
tenant's corpus: documents, chunks, embeddings and leftover upload objects; erased runs'
checkpoints and pauses).

The gateway extracts an upload's text and asks; any replica (queue group `orchestrator`)
stores the document, its chunks and their full-text index in one transaction, and the
embedding job (woken by the NOTIFY of that transaction) embeds the chunks. Text too large
for one NATS message comes as an object in the `corpus-uploads` bucket, deleted once stored.
Served by `runloom.runtime.responder`: a request that cannot be decoded is answered with
`Runloom-Error: <why>` and dead-lettered; one that fails on our side (PostgreSQL away) with
`Runloom-Error: unavailable`, so the caller can retry: adding is idempotent by document id.

The default corpus (the Python docs topics) is loaded here too, for the tenants
`RUNLOOM_DEFAULT_CORPUS_TENANTS` names, before the replica takes runs.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import asyncpg
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from runloom.contracts import operations as ops
from runloom.contracts import subjects
from runloom.contracts.commands import (
    AddDocumentReply,
    AddDocumentRequest,
    DeleteDocumentReply,
    DeleteDocumentRequest,
    EraseReply,
    EraseRequest,
    ListDocumentsReply,
    ListDocumentsRequest,
)
from runloom.corpus import store
from runloom.orchestrator.access import QUEUE
from runloom.runtime import erasure
from runloom.runtime.responder import Responder, Route

log = logging.getLogger("runloom.orchestrator.documents")

ERASED_TABLES = (
    erasure.Owned("chunk_embeddings", run_column=None),
    erasure.Owned("chunks", run_column=None),
    erasure.Owned("documents", run_column=None),
    erasure.Owned("paused_runs"),
    erasure.Owned("run_checkpoints", tenant_column=None),
    erasure.Owned("run_queue"),
    erasure.Owned("tenant_dispatch", run_column=None),
)
"""The orchestrator's tables holding a tenant's data, in the order they are emptied."""


@dataclass
class Documents:
    """Serves the `corpus.*` subjects from one replica."""

    nc: NATS
    js: JetStreamContext
    pool: asyncpg.Pool
    concurrency: int = 8
    """Requests handled at once by this replica (an upload may chunk 2,000,000 characters)."""
    _responder: Responder | None = None

    async def start(self) -> None:
        routes = [
            Route(ops.CORPUS_ADD, self.add),
            Route(ops.CORPUS_LIST, self.list),
            Route(ops.CORPUS_DELETE, self.delete),
            Route(ops.ERASE["orchestrator"], self.erase),
        ]
        self._responder = Responder(self.nc, self.js, QUEUE, routes, self.concurrency)
        await self._responder.start()

    async def stop(self) -> None:
        if self._responder is not None:
            await self._responder.stop()

    # -- the operations ----------------------------------------------------------------------

    async def add(self, req: AddDocumentRequest) -> AddDocumentReply:
        existing = await store.get_document(self.pool, req.tenant_id, req.document_id)
        if existing is not None:  # a retry: its text object may be gone already
            return AddDocumentReply(document=existing.as_contract())
        text = req.text
        if text is None:
            text = await self._take_object(req.text_object)
        if text is None:
            return AddDocumentReply(
                refused="invalid",
                detail="The document's text did not arrive (it expired before it was stored); "
                "upload the document again.",
            )
        try:
            doc = await store.add_document(
                self.pool,
                req.tenant_id,
                title=req.title,
                text=text,
                url=req.url,
                media_type=req.media_type,
                document_id=req.document_id,
            )
        except store.DocumentTooLarge as exc:
            return AddDocumentReply(refused="too_large", detail=str(exc))
        except store.CorpusError as exc:
            return AddDocumentReply(refused="invalid", detail=str(exc))
        finally:
            if req.text_object:  # read once; the bucket's TTL sweeps what a crash leaves
                with contextlib.suppress(Exception):
                    bucket = await self.js.object_store(subjects.CORPUS_UPLOADS_BUCKET)
                    await bucket.delete(req.text_object)
        return AddDocumentReply(document=doc.as_contract())

    async def list(self, req: ListDocumentsRequest) -> ListDocumentsReply:
        docs, total = await store.list_documents(
            self.pool, req.tenant_id, limit=req.limit, offset=req.offset
        )
        return ListDocumentsReply(documents=[d.as_contract() for d in docs], total=total)

    async def delete(self, req: DeleteDocumentRequest) -> DeleteDocumentReply:
        deleted = await store.delete_document(self.pool, req.tenant_id, req.document_id)
        return DeleteDocumentReply(deleted=deleted)

    async def erase(self, req: EraseRequest) -> EraseReply:
        uploads = 0
        if req.whole_tenant:  # upload objects are named by document id
            ids = await self.pool.fetch(
                "SELECT id FROM documents WHERE tenant_id=$1", req.tenant_id
            )
            bucket = await self.js.object_store(subjects.CORPUS_UPLOADS_BUCKET)
            for row in ids:
                with contextlib.suppress(NotFoundError):
                    await bucket.delete(row["id"])
                    uploads += 1
        async with self.pool.acquire() as conn:
            removed = await erasure.erase_rows(conn, "orchestrator", ERASED_TABLES, req)
        removed[f"bucket:{subjects.CORPUS_UPLOADS_BUCKET}"] = uploads
        return EraseReply(removed=removed)

    async def _take_object(self, name: str | None) -> str | None:
        if not name:
            return None
        bucket = await self.js.object_store(subjects.CORPUS_UPLOADS_BUCKET)
        try:
            result = await bucket.get(name)
        except NotFoundError:  # expired, or taken by a retry of this request
            return None
        return (result.data or b"").decode()


async def seed_default_corpus(pool: asyncpg.Pool, tenants: tuple[str, ...]) -> None:
    """Load the default corpus for each tenant (idempotent: a restart adds nothing)."""
    for tenant in tenants:
        added = await store.seed_default_corpus(pool, tenant)
        detail = f"{added} documents added" if added else "already loaded"
        log.info("default corpus for %r: %s", tenant, detail)
