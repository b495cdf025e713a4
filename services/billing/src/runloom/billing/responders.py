"""Request/reply over core NATS, in the queue group `billing`: reserve, commit and release,
and the budget and usage views (`billing.budget.get|set`, `billing.usage.run|range`).

Served by `runloom.runtime.responder` (one replica of the queue group answers each request;
malformed requests are refused and dead-lettered; a failure on our side answers `unavailable`
and the caller retries, which is safe: every handler is idempotent by reservation id).

Requests are applied in batches (see accounts.py): while one batch is being committed, the
requests that arrive meanwhile gather into the next, so an idle replica adds no delay and a busy
one commits many requests at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zlib
from dataclasses import dataclass

import msgspec
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from runloom.billing import metrics
from runloom.billing.access import QUEUE
from runloom.billing.accounts import Accounts, Reply, Request
from runloom.billing.queries import Queries
from runloom.contracts import operations as ops
from runloom.contracts.commands import ReserveReply
from runloom.runtime.responder import Responder, Route

log = logging.getLogger(__name__)


class Batcher:
    """Feeds requests to `Accounts.apply` in batches.

    Requests are spread over `lanes` by tenant: one tenant's requests always meet in the same
    lane (where they batch together, since they contend for the same tenant row anyway), while
    different tenants' batches commit in parallel.
    """

    def __init__(self, accounts: Accounts, max_batch: int = 256, lanes: int = 4) -> None:
        self.accounts = accounts
        self.max_batch = max_batch
        self._queues: list[asyncio.Queue[tuple[Request, asyncio.Future[Reply | None]]]] = [
            asyncio.Queue() for _ in range(max(lanes, 1))
        ]
        self._tasks: list[asyncio.Task[None]] = []
        self.batches = 0
        self.requests = 0

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._run(q), name=f"billing-batcher-{i}")
            for i, q in enumerate(self._queues)
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def submit(self, request: Request) -> Reply | None:
        future: asyncio.Future[Reply | None] = asyncio.get_running_loop().create_future()
        key = getattr(request, "tenant_id", None) or request.reservation_id
        lane = zlib.crc32(key.encode()) % len(self._queues)
        await self._queues[lane].put((request, future))
        return await future

    async def _run(
        self, queue: asyncio.Queue[tuple[Request, asyncio.Future[Reply | None]]]
    ) -> None:
        while True:
            batch = [await queue.get()]
            while len(batch) < self.max_batch and not queue.empty():
                batch.append(queue.get_nowait())
            self.batches += 1
            self.requests += len(batch)
            try:
                replies = await self.accounts.apply([r for r, _ in batch])
            except asyncio.CancelledError:
                for _, fut in batch:
                    fut.cancel()
                raise
            except Exception as exc:
                if len(batch) == 1:
                    batch[0][1].set_exception(exc)
                    continue
                # One bad request must not fail its neighbours: apply them one by one.
                for request, fut in batch:
                    try:
                        fut.set_result((await self.accounts.apply([request]))[0])
                    except asyncio.CancelledError:
                        raise
                    except Exception as one_exc:
                        fut.set_exception(one_exc)
                continue
            for (_, fut), reply in zip(batch, replies, strict=True):
                if not fut.done():
                    fut.set_result(reply)


@dataclass
class Responders:
    """The billing subjects, served from one replica."""

    nc: NATS
    js: JetStreamContext
    accounts: Accounts
    queries: Queries | None = None
    """Budget and usage views (not served when None)."""
    concurrency: int = 64
    """Requests handled at once by this replica."""
    lanes: int = 4
    """Batches committing at once (requests spread over them by tenant)."""
    batcher: Batcher | None = None
    _responder: Responder | None = None

    def routes(self) -> list[Route]:
        assert self.batcher is not None
        submit = self.batcher.submit
        routes = [
            Route(ops.BILLING_RESERVE, submit),
            Route(ops.BILLING_COMMIT, submit),
            Route(ops.BILLING_RELEASE, submit),
        ]
        if self.queries is not None:
            q = self.queries
            routes += [
                Route(ops.BILLING_BUDGET_GET, q.budget),
                Route(ops.BILLING_BUDGET_SET, q.set_budget),
                Route(ops.BILLING_USAGE_RUN, q.run_usage),
                Route(ops.BILLING_USAGE_RANGE, q.usage_range),
                Route(ops.ERASE["billing"], q.erase),
            ]
        return routes

    async def start(self) -> None:
        self.batcher = Batcher(self.accounts, lanes=self.lanes)
        self.batcher.start()
        self._responder = Responder(
            self.nc, self.js, QUEUE, self.routes(), self.concurrency, on_outcome=_count
        )
        await self._responder.start()

    async def stop(self) -> None:
        if self._responder is not None:
            await self._responder.stop()
        if self.batcher is not None:
            await self.batcher.stop()


def _count(subject: str, reply: msgspec.Struct | None) -> None:
    operation = subject.removeprefix("billing.")
    metrics.REQUESTS.labels(operation, "error" if reply is None else "ok").inc()
    if isinstance(reply, ReserveReply):
        metrics.RESERVATIONS.labels("granted" if reply.granted else "refused").inc()
        if not reply.granted and reply.scope:
            metrics.REFUSALS.labels(reply.scope).inc()
