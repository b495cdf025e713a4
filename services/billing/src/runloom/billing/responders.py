"""Request/reply over core NATS, in the queue group `billing`: reserve, commit and release,
and the budget and usage views (`billing.budget.get|set`, `billing.usage.run|range`).

Every replica subscribes in the same queue group, so each request reaches one of them. nats-py
runs the callbacks of one subscription one after another, so each request is handled in its
own task (bounded by a semaphore). A malformed request is answered at once with a
`Runloom-Error` header and dead-lettered with the reason; a request that fails on our side
(Postgres away) is answered with `Runloom-Error: unavailable` so the caller backs off and
retries, which is safe: every handler is idempotent by reservation id.

Requests are applied in batches (see accounts.py): while one batch is being committed, the
requests that arrive meanwhile gather into the next, so an idle replica adds no delay and a busy
one commits many requests at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from runloom.billing import metrics
from runloom.billing.accounts import Accounts, Reply, Request
from runloom.billing.queries import Queries
from runloom.contracts import subjects
from runloom.contracts.commands import (
    BudgetGetRequest,
    BudgetSetRequest,
    CommitRequest,
    ReleaseRequest,
    ReserveReply,
    ReserveRequest,
    RunUsageRequest,
    UsageRangeRequest,
)
from runloom.runtime import bus
from runloom.runtime.telemetry import consumer_span

log = logging.getLogger(__name__)

QUEUE = "billing"
UNAVAILABLE = "unavailable"
DEAD_LETTER_STREAM = "core"
"""The `stream` token of dead letters from core NATS requests (dlq.core.billing)."""

_encoder = msgspec.json.Encoder()


@dataclass(frozen=True)
class _Route:
    subject: str
    decoder: msgspec.json.Decoder[Any]
    handle: Callable[[Any], Awaitable[msgspec.Struct | None]]


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
    _subs: list[Subscription] = field(default_factory=list)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _sem: asyncio.Semaphore | None = None

    def routes(self) -> list[_Route]:
        assert self.batcher is not None
        submit = self.batcher.submit
        routes = [
            _Route(subjects.BILLING_RESERVE, msgspec.json.Decoder(ReserveRequest), submit),
            _Route(subjects.BILLING_COMMIT, msgspec.json.Decoder(CommitRequest), submit),
            _Route(subjects.BILLING_RELEASE, msgspec.json.Decoder(ReleaseRequest), submit),
        ]
        if self.queries is not None:
            q = self.queries
            routes += [
                _Route(subject, msgspec.json.Decoder(request), handle)
                for subject, request, handle in (
                    (subjects.BILLING_BUDGET_GET, BudgetGetRequest, q.budget),
                    (subjects.BILLING_BUDGET_SET, BudgetSetRequest, q.set_budget),
                    (subjects.BILLING_USAGE_RUN, RunUsageRequest, q.run_usage),
                    (subjects.BILLING_USAGE_RANGE, UsageRangeRequest, q.usage_range),
                )
            ]
        return routes

    async def start(self) -> None:
        self._sem = asyncio.Semaphore(self.concurrency)
        self.batcher = Batcher(self.accounts, lanes=self.lanes)
        self.batcher.start()
        for route in self.routes():
            self._subs.append(
                await self.nc.subscribe(route.subject, queue=QUEUE, cb=self._callback(route))
            )
        await self.nc.flush()

    async def stop(self) -> None:
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._subs.clear()
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if self.batcher is not None:
            await self.batcher.stop()

    def _callback(self, route: _Route) -> Callable[[Msg], Awaitable[None]]:
        async def cb(msg: Msg) -> None:
            assert self._sem is not None
            await self._sem.acquire()
            task = asyncio.create_task(self._serve(route, msg))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        return cb

    async def _serve(self, route: _Route, msg: Msg) -> None:
        try:
            operation = route.subject.removeprefix("billing.")
            with consumer_span(route.subject, msg.headers, consumer=QUEUE):
                try:
                    request = route.decoder.decode(msg.data)
                except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                    reason = f"malformed {route.subject} request: {exc}"
                    await bus.reply(self.nc, msg, b"", error=reason)
                    with contextlib.suppress(Exception):
                        await bus.dead_letter(
                            self.js, msg, stream=DEAD_LETTER_STREAM, consumer=QUEUE, reason=reason
                        )
                    return
                try:
                    reply = await route.handle(request)
                except Exception:
                    log.exception("%s failed; the caller will retry", route.subject)
                    metrics.REQUESTS.labels(operation, "error").inc()
                    await bus.reply(self.nc, msg, b"", error=UNAVAILABLE)
                    return
                await bus.reply(self.nc, msg, _encoder.encode(reply))
                metrics.REQUESTS.labels(operation, "ok").inc()
                if isinstance(reply, ReserveReply):
                    metrics.RESERVATIONS.labels("granted" if reply.granted else "refused").inc()
                    if not reply.granted and reply.scope:
                        metrics.REFUSALS.labels(reply.scope).inc()
        finally:
            assert self._sem is not None
            self._sem.release()
