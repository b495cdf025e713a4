"""Request/reply over core NATS: the operations a service answers, declared once.

A `Route` pairs an operation of `contracts.operations` (its subject, the contract types of its
request and reply) with the handler; a `Responder` serves a list of them in the service's
queue group, so each request reaches one replica. What every service needs is done here, once:

- nats-py runs one subscription's callbacks one after another, so each request is handled in
  its own task, at most `concurrency` at once per replica;
- each request runs in a consumer span continuing the requester's trace;
- a request that does not decode is answered at once with `Runloom-Error: <why>` and
  dead-lettered (`dlq.core.<queue>`) with the reason: it never reaches a handler;
- a handler that fails (PostgreSQL away) answers `Runloom-Error: unavailable`, so the caller
  backs off and retries (handlers are idempotent by the request's id).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from runloom.contracts.operations import UNAVAILABLE, Operation
from runloom.runtime import bus
from runloom.runtime.telemetry import consumer_span

log = logging.getLogger(__name__)

DEAD_LETTER_STREAM = "core"
"""The `stream` token of dead letters from core NATS requests (`dlq.core.<queue>`)."""

Handler = Callable[[Any], Awaitable[msgspec.Struct | None]]
Outcome = Callable[[str, msgspec.Struct | None], None]
"""Called after each decoded request with its subject and reply (None: the handler failed)."""

_encoder = msgspec.json.Encoder()


@dataclass(frozen=True)
class Route:
    """An operation (subject, request and reply types) and what answers it."""

    operation: Operation[Any, Any]
    handle: Handler

    @property
    def subject(self) -> str:
        return self.operation.subject

    @property
    def request(self) -> type[msgspec.Struct]:
        return self.operation.request


@dataclass
class Responder:
    """Serves `routes` from one replica in the queue group `queue`."""

    nc: NATS
    js: JetStreamContext
    queue: str
    routes: Sequence[Route]
    concurrency: int = 64
    """Requests handled at once by this replica."""
    on_outcome: Outcome | None = None
    _subs: list[Subscription] = field(default_factory=list)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _sem: asyncio.Semaphore | None = None

    async def start(self) -> None:
        self._sem = asyncio.Semaphore(self.concurrency)
        for route in self.routes:
            cb = self._callback(route, msgspec.json.Decoder(route.request))
            self._subs.append(await self.nc.subscribe(route.subject, queue=self.queue, cb=cb))
        await self.nc.flush()

    async def stop(self) -> None:
        """Stop taking requests, and answer the ones received before that."""
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.drain()
        self._subs.clear()
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _callback(
        self, route: Route, decoder: msgspec.json.Decoder[Any]
    ) -> Callable[[Msg], Awaitable[None]]:
        async def cb(msg: Msg) -> None:
            assert self._sem is not None
            await self._sem.acquire()
            task = asyncio.create_task(self._serve(route, decoder, msg))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        return cb

    async def _serve(self, route: Route, decoder: msgspec.json.Decoder[Any], msg: Msg) -> None:
        try:
            with consumer_span(route.subject, msg.headers, consumer=self.queue):
                try:
                    request = decoder.decode(msg.data)
                except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                    await self._refuse(msg, f"malformed {route.subject} request: {exc}")
                    return
                try:
                    reply = await route.handle(request)
                except Exception:
                    log.exception("%s failed; the caller may retry", route.subject)
                    self._observe(route.subject, None)
                    await bus.reply(self.nc, msg, error=UNAVAILABLE)
                    return
                await bus.reply(self.nc, msg, _encoder.encode(reply))
                self._observe(route.subject, reply)
        finally:
            assert self._sem is not None
            self._sem.release()

    async def _refuse(self, msg: Msg, reason: str) -> None:
        await bus.reply(self.nc, msg, error=reason)
        with contextlib.suppress(Exception):
            await bus.dead_letter(
                self.js, msg, stream=DEAD_LETTER_STREAM, consumer=self.queue, reason=reason
            )

    def _observe(self, subject: str, reply: msgspec.Struct | None) -> None:
        if self.on_outcome is not None:
            self.on_outcome(subject, reply)
