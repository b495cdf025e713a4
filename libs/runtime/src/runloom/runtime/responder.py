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
  backs off and retries (handlers are idempotent by the request's id);
- liveness: a watchdog looks at each subscription every `liveness_every_s`. One that is gone
  from the connection (unsubscribed underneath), whose delivery task has ended (nats-py runs
  one per subscription; if it dies, requests pile up unanswered), whose queued requests
  have not moved for two looks while slots are free, or that the server refused by
  permission (its `-ERR` arrives on the connection, the client keeps the subscription and
  nothing ever comes: reason `refused`, naming the subject and the identity to check), is
  stalled: the responder's `Liveness` fails (/readyz names it, a counter counts it) and the
  subscription is made again at every look; it is alive again at the next look that finds
  every subscription serving (a refused one: once the server has granted it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
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
from runloom.runtime.management import Liveness
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
    liveness_every_s: float = 5.0
    """How often the watchdog looks at each subscription."""
    _subs: list[Subscription] = field(default_factory=list)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _sem: asyncio.Semaphore | None = None
    _taken: list[int] = field(default_factory=list)
    """Requests each route's callback has taken (the watchdog's measure of progress)."""
    _made: list[float] = field(default_factory=list)
    """When each route's subscription was last asked for (`time.monotonic()`)."""
    _live: Liveness | None = None
    _watchdog: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._sem = asyncio.Semaphore(self.concurrency)
        self._taken = [0] * len(self.routes)
        self._made = [0.0] * len(self.routes)
        for i in range(len(self.routes)):
            self._subs.append(await self._subscribe(i))
        await self.nc.flush()
        self._live = Liveness("responder", self.queue).register()
        self._watchdog = asyncio.create_task(self._watch(), name=f"liveness {self.queue}")

    async def stop(self) -> None:
        """Stop taking requests, and answer the ones received before that."""
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
        if self._live is not None:
            self._live.unregister()
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.drain()
        self._subs.clear()
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _subscribe(self, i: int) -> Subscription:
        route = self.routes[i]
        self._made[i] = time.monotonic()
        cb = self._callback(i, route, msgspec.json.Decoder(route.request))
        return await self.nc.subscribe(route.subject, queue=self.queue, cb=cb)

    # -- liveness ---------------------------------------------------------------------------

    async def _watch(self) -> None:
        assert self._live is not None
        stuck_since: list[int | None] = [None] * len(self.routes)
        while True:
            await asyncio.sleep(self.liveness_every_s)
            stalled = [
                (i, why)
                for i, sub in enumerate(self._subs)
                if (why := self._stalled(i, sub, stuck_since)) is not None
            ]
            if not stalled:
                self._live.ok()  # re-created (if it was not) and seen working since
            for i, (reason, detail) in stalled:
                self._live.fail(reason, f"{self.routes[i].subject}: {detail}")
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._subs[i].unsubscribe(), 2.0)
                try:
                    self._subs[i] = await self._subscribe(i)
                    await self.nc.flush(timeout=2)
                except Exception as exc:  # NATS away: try again at the next look
                    log.warning("%s: could not subscribe again: %s", self.routes[i].subject, exc)
                stuck_since[i] = None

    def _stalled(
        self, i: int, sub: Subscription, stuck_since: list[int | None]
    ) -> tuple[str, str] | None:
        """(reason, what was seen) when route `i`'s subscription no longer serves, else None;
        `stuck_since` keeps, per route, the count taken when requests were last seen queued."""
        subject = self.routes[i].subject
        refused = bus.refusals(self.nc).since([subject], since=self._made[i], action="subscription")
        if refused:  # the server never made it: nothing will ever arrive
            return "refused", bus.explain(refused)
        if sub._id not in self.nc._subs:  # type: ignore[attr-defined]
            return "unsubscribed", "the subscription is gone from the connection"
        delivery = sub._wait_for_msgs_task
        if delivery is None or delivery.done():
            return "delivery_task_ended", "its delivery task has ended"
        assert self._sem is not None
        if sub.pending_msgs == 0 or self._sem.locked():
            stuck_since[i] = None
            return None
        if stuck_since[i] != self._taken[i]:
            stuck_since[i] = self._taken[i]
            return None
        return "stalled", f"{sub.pending_msgs} requests wait and none was taken"

    def _callback(
        self, i: int, route: Route, decoder: msgspec.json.Decoder[Any]
    ) -> Callable[[Msg], Awaitable[None]]:
        async def cb(msg: Msg) -> None:
            assert self._sem is not None
            self._taken[i] += 1
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
