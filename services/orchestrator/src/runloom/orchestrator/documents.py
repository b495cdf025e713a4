"""The corpus's owner: `corpus.add|list|delete` over core NATS request/reply.

The gateway extracts an upload's text and asks; any replica (queue group `orchestrator`)
stores the document, its chunks and their full-text index in one transaction, and the
embedding job (woken by the NOTIFY of that transaction) embeds the chunks. Text too large
for one NATS message comes as an object in the `corpus-uploads` bucket, deleted once stored.
A request that cannot be decoded is answered with `Runloom-Error: <why>` and dead-lettered;
one that fails on our side (PostgreSQL away) with `Runloom-Error: unavailable`, so the caller
can retry: adding is idempotent by document id.

The default corpus (the Python docs topics) is loaded here too, for the tenants
`RUNLOOM_DEFAULT_CORPUS_TENANTS` names, before the replica takes runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from runloom.contracts import subjects
from runloom.contracts.commands import (
    AddDocumentReply,
    AddDocumentRequest,
    DeleteDocumentReply,
    DeleteDocumentRequest,
    ListDocumentsReply,
    ListDocumentsRequest,
)
from runloom.corpus import store
from runloom.runtime import bus
from runloom.runtime.telemetry import consumer_span

log = logging.getLogger("runloom.orchestrator.documents")

QUEUE = "orchestrator"
UNAVAILABLE = "unavailable"
DEAD_LETTER_STREAM = "core"
"""The `stream` token of dead letters from core NATS requests (dlq.core.orchestrator)."""

_encoder = msgspec.json.Encoder()
Handler = Callable[[Any], Awaitable[msgspec.Struct]]


@dataclass
class Documents:
    """Serves the `corpus.*` subjects from one replica."""

    nc: NATS
    js: JetStreamContext
    pool: asyncpg.Pool
    concurrency: int = 8
    """Requests handled at once by this replica (an upload may chunk 2,000,000 characters)."""
    _subs: list[Subscription] = field(default_factory=list)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _sem: asyncio.Semaphore | None = None

    async def start(self) -> None:
        self._sem = asyncio.Semaphore(self.concurrency)
        routes: list[tuple[str, type[msgspec.Struct], Handler]] = [
            (subjects.CORPUS_ADD, AddDocumentRequest, self.add),
            (subjects.CORPUS_LIST, ListDocumentsRequest, self.list),
            (subjects.CORPUS_DELETE, DeleteDocumentRequest, self.delete),
        ]
        for subject, kind, handle in routes:
            cb = self._callback(subject, msgspec.json.Decoder(kind), handle)
            self._subs.append(await self.nc.subscribe(subject, queue=QUEUE, cb=cb))
        await self.nc.flush()

    async def stop(self) -> None:
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._subs.clear()
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

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

    async def _take_object(self, name: str | None) -> str | None:
        if not name:
            return None
        bucket = await self.js.object_store(subjects.CORPUS_UPLOADS_BUCKET)
        try:
            result = await bucket.get(name)
        except NotFoundError:  # expired, or taken by a retry of this request
            return None
        return (result.data or b"").decode()

    # -- serving ------------------------------------------------------------------------------

    def _callback(
        self, subject: str, decoder: msgspec.json.Decoder[Any], handle: Handler
    ) -> Callable[[Msg], Awaitable[None]]:
        async def cb(msg: Msg) -> None:
            # nats-py runs one subscription's callbacks one after another: each in its own task.
            assert self._sem is not None
            await self._sem.acquire()
            task = asyncio.create_task(self._serve(subject, decoder, handle, msg))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        return cb

    async def _serve(
        self, subject: str, decoder: msgspec.json.Decoder[Any], handle: Handler, msg: Msg
    ) -> None:
        try:
            with consumer_span(subject, msg.headers, consumer=QUEUE):
                try:
                    request = decoder.decode(msg.data)
                except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                    reason = f"malformed {subject} request: {exc}"
                    await bus.reply(self.nc, msg, b"", error=reason)
                    with contextlib.suppress(Exception):
                        await bus.dead_letter(
                            self.js, msg, stream=DEAD_LETTER_STREAM, consumer=QUEUE, reason=reason
                        )
                    return
                try:
                    reply = await handle(request)
                except Exception:
                    log.exception("%s failed; the caller may retry", subject)
                    await bus.reply(self.nc, msg, b"", error=UNAVAILABLE)
                    return
                await bus.reply(self.nc, msg, _encoder.encode(reply))
        finally:
            assert self._sem is not None
            self._sem.release()


async def seed_default_corpus(pool: asyncpg.Pool, tenants: tuple[str, ...]) -> None:
    """Load the default corpus for each tenant (idempotent: a restart adds nothing)."""
    for tenant in tenants:
        added = await store.seed_default_corpus(pool, tenant)
        detail = f"{added} documents added" if added else "already loaded"
        log.info("default corpus for %r: %s", tenant, detail)
