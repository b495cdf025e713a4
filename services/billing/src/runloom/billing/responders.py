"""Request/reply over core NATS: reserve, commit and release, in the queue group `billing`.

Every replica subscribes in the same queue group, so each request reaches one of them. nats-py
runs the callbacks of one subscription one after another, so each request is handled in its
own task (bounded by a semaphore). A malformed request is answered at once with a
`Runloom-Error` header and dead-lettered with the reason; a request that fails on our side
(Postgres away) is answered with `Runloom-Error: unavailable` so the caller backs off and
retries, which is safe: every handler is idempotent by reservation id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from runloom.billing.accounts import Accounts
from runloom.contracts import subjects
from runloom.contracts.commands import CommitRequest, ReleaseRequest, ReserveRequest
from runloom.runtime import bus
from runloom.runtime.telemetry import context_from_headers, inject_headers, tracer

log = logging.getLogger(__name__)

QUEUE = "billing"
ERROR_HEADER = "Runloom-Error"
UNAVAILABLE = "unavailable"
DEAD_LETTER_STREAM = "core"
"""The `stream` token of dead letters from core NATS requests (dlq.core.billing)."""

_encoder = msgspec.json.Encoder()


@dataclass(frozen=True)
class _Route:
    subject: str
    decoder: msgspec.json.Decoder[Any]
    handle: Callable[[Any], Awaitable[msgspec.Struct]]


@dataclass
class Responders:
    """The three billing subjects, served from one replica."""

    nc: NATS
    js: JetStreamContext
    accounts: Accounts
    concurrency: int = 64
    """Requests handled at once by this replica."""
    _subs: list[Subscription] = field(default_factory=list)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _sem: asyncio.Semaphore | None = None

    def routes(self) -> list[_Route]:
        return [
            _Route(
                subjects.BILLING_RESERVE,
                msgspec.json.Decoder(ReserveRequest),
                self.accounts.reserve,
            ),
            _Route(
                subjects.BILLING_COMMIT, msgspec.json.Decoder(CommitRequest), self.accounts.commit
            ),
            _Route(
                subjects.BILLING_RELEASE,
                msgspec.json.Decoder(ReleaseRequest),
                self.accounts.release,
            ),
        ]

    async def start(self) -> None:
        self._sem = asyncio.Semaphore(self.concurrency)
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
            ctx = context_from_headers(msg.headers)
            with tracer("runloom.billing").start_as_current_span(route.subject, context=ctx):
                try:
                    request = route.decoder.decode(msg.data)
                except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                    reason = f"malformed {route.subject} request: {exc}"
                    await self._reply(msg, b"", error=reason)
                    with contextlib.suppress(Exception):
                        await bus.dead_letter(
                            self.js, msg, stream=DEAD_LETTER_STREAM, consumer=QUEUE, reason=reason
                        )
                    return
                try:
                    reply = await route.handle(request)
                except Exception:
                    log.exception("%s failed; the caller will retry", route.subject)
                    await self._reply(msg, b"", error=UNAVAILABLE)
                    return
                await self._reply(msg, _encoder.encode(reply))
        finally:
            assert self._sem is not None
            self._sem.release()

    async def _reply(self, msg: Msg, body: bytes, *, error: str | None = None) -> None:
        if not msg.reply:
            return
        if error:
            error = " ".join(error.split())[:1000]  # a header value is one line
        headers = inject_headers({ERROR_HEADER: error} if error else None)
        with contextlib.suppress(Exception):
            await self.nc.publish(msg.reply, body, headers=headers or None)
