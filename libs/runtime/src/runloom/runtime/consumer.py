"""Declared consumers: what a service consumes, stated once, and the one loop that serves it.

A `Consumer` names the stream, the durable, the filter, the contract type of each subject it
takes, the ack deadline, the concurrency, whether the ack is kept alive while a handler works
and which lock a message takes. `serve` creates or updates the durable to that declaration
and serves it until `stop`:

    fetch -> skip (by event type header) -> decode -> lock -> handle (ack kept alive) -> ack

Poison policy (no message stalls a consumer): a message that cannot be decoded, or whose
handler raises `PoisonMessage`, a data error the store refuses (`asyncpg.DataError`: NUL in
text, a number out of range, ...) or a ValueError/OverflowError (a value out of its range), is
set apart: the run it belongs to gets `run.failed`
naming the cause (when it is not already ended), the message goes to
`dlq.<stream>.<durable>` with the reason, a counter counts it, and it is acked. A batch
consumer that fails a batch applies its messages one at a time, so only the poison one is
set apart. Any other exception is taken as transient (the bus or the database away): the
message is nak'ed with a growing delay and redelivered, to this replica or another.

Liveness (no silent stop): a watchdog asks the server every `liveness_every_s` what waits for
the durable. When work waits (undelivered messages, the ack-pending limit not reached) while
this replica has free slots and took nothing since the previous look, `liveness_strikes` times
in a row, or when the durable is gone from the server, the consumer is stalled: its
`Liveness` fails (/readyz names it, a counter counts it), the subscription is dropped and the
durable created and bound again; it is alive again at the next look that finds it working.
What stalls it: its inbox subscription unsubscribed or lost, a fetch that never returns, the
durable deleted.

Its proof of life is the server answering its fetches (messages, or a status saying nothing is
there): neither creating the durable nor binding to it proves anything (a bind succeeds for a
durable that does not exist). When no fetch has been answered for the liveness window
(`liveness_every_s * liveness_strikes`) while the connection is up and slots are free, the
consumer fails as `unanswered` even with no work seen waiting. A right the server refuses by
permission (creating, fetching from or inspecting the durable, its reply inbox) is never an
error the client raises: the server drops the request, reports `-ERR 'Permissions Violation
...'` on the connection and the request times out. `bus.connect` keeps those reports
(`bus.refusals`), and a consumer failing while one names its subjects fails as `refused`, the
reason naming each refused subject and the NATS identity to check; so does one whose acks
(or dead letters) the server refuses, which fetches and handles but acknowledges nothing, every
message coming again after its ack deadline. Meanwhile it keeps trying
(fetches and errors retried after pauses growing to 5 s, the durable created again at every
look that finds it failing) and is alive again by itself once its fetches are answered, e.g.
after the server's configuration is reloaded with the right.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import asyncpg
import msgspec
import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js import api as js_api
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind
from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector
from runloom.contracts import subjects
from runloom.contracts.events import Event, RunFailed, decode_event
from runloom.contracts.headers import Header
from runloom.runtime import bus, metrics, pull
from runloom.runtime.bus import PoisonMessage, dead_letter
from runloom.runtime.eventlog import EventLog, RunClosed
from runloom.runtime.management import Liveness
from runloom.runtime.retry import Backoff
from runloom.runtime.telemetry import (
    consumer_span,
    context_from_headers,
    destination_template,
    exporting,
    sampled,
    work_span,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

REDELIVERY = Backoff(first_s=0.5, max_s=30.0)
"""Delay of a message handed back after a failure, by its delivery count (1 s, 2 s … 30 s)."""
RETRY = Backoff(first_s=1.0, max_s=5.0)
"""Pause after the server failed to answer (a fetch unanswered, an error), by failures in a row."""
_RUN_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")

POISON_ERRORS: tuple[type[BaseException], ...] = (
    PoisonMessage,
    msgspec.DecodeError,
    msgspec.ValidationError,
    asyncpg.DataError,
    ValueError,
    OverflowError,
)
"""Errors no redelivery can cure: the message is dead-lettered at once."""


@dataclass
class Delivery:
    """One message being handled: the raw message, its delivery count, the lock's connection."""

    msg: Msg
    conn: asyncpg.Connection | None = None
    """The connection holding the message's lock (when the consumer declares one)."""
    retry_in: float | None = None
    """Set by `retry`: nak with this delay instead of acking."""

    @property
    def delivered(self) -> int:
        """How many times the server has delivered this message (1 the first time)."""
        return self.msg.metadata.num_delivered if self.msg.reply else 1

    def retry(self, delay: float) -> None:
        """Hand the message back (nak) after the handler returns, to be redelivered later."""
        self.retry_in = delay


Handler = Callable[[Any, Delivery], Awaitable[None]]
BatchHandler = Callable[[Sequence[tuple[Any, Delivery]]], Awaitable[None]]


@dataclass(frozen=True, kw_only=True)
class Lock:
    """A Postgres advisory lock per message, one scheme for every consumer."""

    key: Callable[[Any], str]
    """The lock's name for a decoded message (e.g. `run:<run_id>`, `job:<job_id>`)."""
    wait_s: float | None = None
    """None: try once, and hand the message back if held; else wait up to this long."""
    busy_retry_s: float = 2.0
    """Nak delay when the lock is held by another session (with `wait_s=None`)."""


@dataclass(frozen=True, kw_only=True)
class Consumer(Generic[T]):
    """A durable pull consumer, declared once. Options are data; `serve` runs it."""

    stream: str
    """The JetStream stream read."""
    durable: str
    """The durable name shared by every replica of the service."""
    filter_subject: str
    """Subjects taken from the stream."""
    decodes: Mapping[str, type[Any]] | type[Any]
    """The contract type of the messages (one for every subject, or one per exact subject)."""
    handler: Handler | None = None
    """Called with (decoded message, delivery); returning acks, `delivery.retry` naks."""
    batch_handler: BatchHandler | None = None
    """Called with a batch of (decoded message, delivery) instead: all applied, or it raises."""
    event_types: frozenset[str] | None = None
    """Run events only: take these types, ack the rest unread (by their type header)."""
    ack_wait_s: float = 30.0
    """The server redelivers a message not acked (or kept alive) for this long."""
    concurrency: int = 4
    """Messages handled at once by one replica."""
    batch: int = 8
    """Most messages fetched at once."""
    linger_s: float = 0.0
    """Batch consumers: after a batch short of `batch`, wait this long before fetching again,
    so a steady flow comes in fuller batches (each batch costs its round trips, whatever its
    size); what is waiting is then at most this much later."""
    keep_alive: bool = False
    """Extend the ack deadline (`in_progress`) every ack_wait/3 while the handler works."""
    lock: Lock | None = None
    """A Postgres advisory lock taken around the handler."""
    fail_run: bool = True
    """On poison, append `run.failed` to the run the message names (if it has not ended)."""
    deliver_new: bool = False
    """A durable created now starts at the stream's next message instead of its first (it
    has no use for the history stored before it existed)."""
    liveness_every_s: float = 5.0
    """How often the watchdog asks the server what waits for the durable."""
    liveness_strikes: int = 3
    """Looks in a row that find work waiting and none taken before the consumer is stalled."""

    @property
    def name(self) -> str:
        return f"{self.stream}/{self.durable}"

    def config(self) -> js_api.ConsumerConfig:
        return js_api.ConsumerConfig(
            durable_name=self.durable,
            ack_policy=js_api.AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait_s,
            max_deliver=-1,
            filter_subject=self.filter_subject,
            max_ack_pending=1000,
            deliver_policy=js_api.DeliverPolicy.NEW if self.deliver_new else None,
        )

    def decoder(self, subject: str) -> Callable[[bytes], Any]:
        cls = self.decodes.get(subject) if isinstance(self.decodes, Mapping) else self.decodes
        if cls is None:
            raise PoisonMessage(f"{self.name} takes no message on {subject}")
        if cls is Event:
            return decode_event
        return _decoders.setdefault(cls, msgspec.json.Decoder(cls).decode)


_decoders: dict[type[Any], Callable[[bytes], Any]] = {}


# -- counters (exported as metrics by the management port) -----------------------------------


@dataclass
class ConsumerStats:
    """Plain counters of one consumer in this process."""

    handled: int = 0
    """Messages applied and acked."""
    skipped: int = 0
    """Run events of other types acked unread."""
    retried: int = 0
    """Messages handed back (nak) for a later try."""
    dead_lettered: int = 0
    """Messages set apart as poison."""
    runs_failed: int = 0
    """Runs ended with run.failed because of a poison message."""


STATS: dict[str, ConsumerStats] = {}
"""Per consumer (`<stream>/<durable>`), for this process."""


def stats(consumer: Consumer[Any]) -> ConsumerStats:
    return STATS.setdefault(consumer.name, ConsumerStats())


# -- the loop --------------------------------------------------------------------------------


@dataclass
class Runtime:
    """What a served consumer needs from its service."""

    js: JetStreamContext
    stop: asyncio.Event
    events: EventLog | None = None
    """Appends run.failed for poison (when the consumer declares `fail_run`)."""
    lock_pool: asyncpg.Pool | None = None
    """Connections for the consumer's locks."""
    counters: ConsumerStats = field(default_factory=ConsumerStats)


async def ensure(js: JetStreamContext, consumer: Consumer[Any]) -> Exception | None:
    """Create the durable, or bring an existing one to the declaration (create-or-update).
    The error when the server refused or did not answer (the durable is then served as it is)."""
    try:
        await js.add_consumer(consumer.stream, consumer.config())
    except Exception as exc:  # e.g. a filter change the server refuses: serve it as it is
        log.warning("could not create or update consumer %s: %s", consumer.name, exc)
        return exc
    return None


async def serve(
    consumer: Consumer[Any],
    js: JetStreamContext,
    stop: asyncio.Event,
    *,
    events: EventLog | None = None,
    lock_pool: asyncpg.Pool | None = None,
    ready: Callable[[], None] | None = None,
) -> None:
    """Serve `consumer` until `stop` is set (then hand unfinished messages back).

    `ready` is called once the durable is bound (the service's /readyz may then answer 200).
    """
    if consumer.lock is not None and lock_pool is None:
        raise ValueError(f"{consumer.name} declares a lock: pass lock_pool")
    if (consumer.handler is None) == (consumer.batch_handler is None):
        raise ValueError(f"{consumer.name} needs exactly one of handler and batch_handler")
    rt = Runtime(js, stop, events, lock_pool, stats(consumer))
    loop = _Loop(consumer, rt, ready)
    await loop.run()


class _Loop:
    def __init__(
        self, consumer: Consumer[Any], rt: Runtime, ready: Callable[[], None] | None = None
    ) -> None:
        self.c = consumer
        self.rt = rt
        self.ready = ready
        self.sem = asyncio.Semaphore(consumer.concurrency)
        self.tasks: set[asyncio.Task[None]] = set()
        self.live = Liveness("consumer", consumer.name)
        self.received = 0
        """Messages fetched (the watchdog's measure of progress)."""
        self.in_batch = False
        self.fetching: asyncio.Future[list[Msg]] | None = None
        self.recreate = False
        """Set by the watchdog: drop the subscription and bind the durable again."""
        self.answered_at = time.monotonic()
        """When the server last answered one of this consumer's fetches (its proof of life)."""
        self.failures = 0
        """Fetches unanswered and errors in a row (the retry's pause grows with them)."""
        self.last_error = ""
        """What went wrong last, for the liveness reason."""

    def answered(self) -> None:
        self.answered_at = time.monotonic()
        self.failures = 0

    async def run(self) -> None:
        c, rt = self.c, self.rt
        sub = None
        self.live.register()
        watchdog = asyncio.create_task(self._watch(), name=f"liveness {c.name}")
        try:
            while not rt.stop.is_set():
                try:
                    if self.recreate:
                        self.recreate = False
                        if sub is not None:
                            with contextlib.suppress(Exception):
                                await asyncio.wait_for(sub.unsubscribe(), 2.0)
                        sub = None
                    if sub is None:
                        failed = await ensure(rt.js, c)
                        if failed is not None:
                            self.last_error = f"creating the durable: {failed or 'no answer'}"
                        # Neither is proof that it is served (a durable that exists may not be
                        # fetched from): only fetches the server answers are (`answered`).
                        sub = await rt.js.pull_subscribe_bind(c.durable, c.stream)
                        if self.ready is not None:
                            self.ready()
                    # Pull only what a free slot can start now: a fetched message waits without
                    # keep-alive, and its ack deadline would run out in our queue.
                    await self.sem.acquire()
                    self.sem.release()
                    free = max(1, min(c.batch, c.concurrency - len(self.tasks)))
                    if c.batch_handler is not None:
                        free = c.batch
                    # Its own task, so the watchdog can end a fetch that never returns.
                    asked = time.monotonic()
                    self.fetching = asyncio.ensure_future(
                        pull.fetch(sub, free, timeout=1.0, answered=self.answered)
                    )
                    try:
                        msgs = await self.fetching
                    except (TimeoutError, nats.errors.TimeoutError):
                        if self.answered_at < asked:  # no answer at all: away, or refused
                            self.last_error = "a fetch got no answer from the server"
                            await self._pause()
                        continue
                    except asyncio.CancelledError:
                        task = asyncio.current_task()
                        if not self.recreate or (task is not None and task.cancelling()):
                            raise
                        continue  # ended by the watchdog
                    finally:
                        self.fetching = None
                    self.received += len(msgs)
                    if c.batch_handler is not None:
                        self.in_batch = True
                        try:
                            await self._batch(msgs)
                        finally:
                            self.in_batch = False
                        if len(msgs) < c.batch and c.linger_s > 0:
                            with contextlib.suppress(TimeoutError):
                                async with asyncio.timeout(c.linger_s):
                                    await rt.stop.wait()
                        continue
                    for msg in msgs:
                        await self.sem.acquire()
                        task = asyncio.create_task(self._one(msg))
                        self.tasks.add(task)
                        task.add_done_callback(self.tasks.discard)
                except asyncio.CancelledError:
                    break
                except Exception as exc:  # server or database away: carry on when they are back
                    log.warning("consumer %s: %s; retrying", c.name, exc)
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    await self._pause()
        finally:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog
            self.live.unregister()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _pause(self) -> None:
        """Wait before trying again (longer after each failure in a row), or until stopped."""
        delay = RETRY.delay(self.failures)
        self.failures += 1
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.rt.stop.wait(), timeout=delay)

    # -- liveness ---------------------------------------------------------------------------

    async def _watch(self) -> None:
        """Every `liveness_every_s`: is work waiting that this replica could take and did not?"""
        c = self.c
        strikes = 0
        seen = self.received
        while True:
            await asyncio.sleep(c.liveness_every_s)
            # Work seen waiting is judged first (look by look); else the server's silence.
            stalled = await self._stalled(seen) or self._unanswered() or self._unacked()
            seen = self.received
            if stalled is None:
                strikes = 0
                self.live.ok()  # re-created (if it was not) and seen working since
                continue
            reason, detail = stalled
            # Only "stalled" is judged here, look by look; the others are final at once.
            strikes = strikes + 1 if reason == "stalled" else c.liveness_strikes
            if strikes < c.liveness_strikes:
                continue
            refused = self._refused()
            if refused is not None:
                reason, detail = "refused", refused
            strikes = 0
            self.live.fail(reason, detail)
            self.recreate = True
            if self.fetching is not None:
                self.fetching.cancel()

    @property
    def window_s(self) -> float:
        return self.c.liveness_every_s * self.c.liveness_strikes

    def _unanswered(self) -> tuple[str, str] | None:
        """("unanswered", why) when the server has answered none of this consumer's requests
        for the liveness window while connected and free to fetch, else None."""
        nc = self.rt.js._nc
        busy = self.in_batch or len(self.tasks) >= self.c.concurrency
        if busy or not nc.is_connected:  # not asking; or away, which the NATS check reports
            self.answered_at = time.monotonic()
            return None
        quiet = time.monotonic() - self.answered_at
        if quiet < self.window_s:
            return None
        return "unanswered", (
            f"the server answered none of its requests for {quiet:.0f}s"
            + (f" (last: {self.last_error})" if self.last_error else "")
        )

    def _unacked(self) -> tuple[str, str] | None:
        """("refused", why) when the server refused this consumer's acks (or dead letters) by
        permission within the liveness window: it fetches and handles, but nothing it handles
        is ever acknowledged, and every message comes again after its ack deadline. Refused
        acks recur once per ack deadline: they are remembered that much longer."""
        api = f"{self.c.stream}.{self.c.durable}"
        since = time.monotonic() - self.window_s - self.c.ack_wait_s
        found = bus.refusals(self.rt.js._nc).since([f"$JS.ACK.{api}", f"dlq.{api}"], since=since)
        return ("refused", bus.explain(found)) if found else None

    def _refused(self) -> str | None:
        """What the server refused this consumer by permission since a fetch was last answered."""
        nc = self.rt.js._nc
        api = f"{self.c.stream}.{self.c.durable}"
        prefixes = [
            f"$JS.API.CONSUMER.MSG.NEXT.{api}",
            f"$JS.API.CONSUMER.CREATE.{api}",
            f"$JS.API.CONSUMER.DURABLE.CREATE.{api}",
            f"$JS.API.CONSUMER.INFO.{api}",
            bytes(nc._inbox_prefix).decode(),
        ]
        found = bus.refusals(nc).since(prefixes, since=self.answered_at)
        return bus.explain(found) if found else None

    async def _stalled(self, seen: int) -> tuple[str, str] | None:
        """(reason, what was seen) when the consumer looks stalled now, else None."""
        c = self.c
        busy = self.in_batch or len(self.tasks) >= c.concurrency
        if busy or self.received != seen or self.recreate:
            return None
        try:
            info = await self.rt.js.consumer_info(
                c.stream, c.durable, timeout=max(0.5, c.liveness_every_s / 2)
            )
        except nats.js.errors.NotFoundError:
            return "deleted", f"the durable {c.durable} is gone from the server"
        except Exception:  # the server away: the process's NATS check says so
            return None
        limit = info.config.max_ack_pending or 0
        if not info.num_pending or (limit > 0 and info.num_ack_pending >= limit):
            return None
        return "stalled", (
            f"{info.num_pending} messages wait and none was fetched "
            f"for {c.liveness_every_s:.0f}s with free slots"
        )

    # -- one message at a time --------------------------------------------------------------

    async def _one(self, msg: Msg) -> None:
        started = time.perf_counter()
        try:
            if self._skip(msg):
                await msg.ack()
                self.rt.counters.skipped += 1
                return
            delivery = Delivery(msg)
            delivered = delivery.delivered
            if delivered > 1:
                metrics.MESSAGE_REDELIVERIES.labels(self.c.durable).inc()
            # A CONSUMER span: the message's creation context is its parent on the first
            # delivery, a link on a redelivery (not part of the original request any more).
            with consumer_span(
                msg.subject,
                msg.headers,
                consumer=self.c.durable,
                delivered=delivered,
                message_id=(msg.headers or {}).get(js_api.Header.MSG_ID),
            ):
                body = self._decode(msg)
                async with self._alive(msg), self._locked(body, delivery) as owned:
                    if owned:
                        await self.c.handler(body, delivery)  # type: ignore[misc]
                if delivery.retry_in is not None:
                    await msg.nak(delay=delivery.retry_in)
                    self.rt.counters.retried += 1
                else:
                    await msg.ack()
                    self.rt.counters.handled += 1
        except asyncio.CancelledError:
            # Shutting down: hand the message to another replica now rather than at ack_wait.
            with contextlib.suppress(Exception):
                await asyncio.shield(msg.nak())
            raise
        except POISON_ERRORS as exc:
            await self._poison(msg, exc)
        except Exception:
            log.exception("consumer %s failed on %s; will be redelivered", self.c.name, msg.subject)
            await self._nak(msg)
        finally:
            self.sem.release()
            metrics.MESSAGE_DURATION.labels(self.c.durable).observe(time.perf_counter() - started)

    def _skip(self, msg: Msg) -> bool:
        if self.c.event_types is None:
            return False
        kind = (msg.headers or {}).get(Header.EVENT_TYPE)
        return kind is not None and kind not in self.c.event_types

    def _decode(self, msg: Msg) -> Any:
        return self.c.decoder(msg.subject)(msg.data)

    @contextlib.asynccontextmanager
    async def _alive(self, msg: Msg) -> AsyncIterator[None]:
        if not self.c.keep_alive:
            yield
            return
        stop = asyncio.Event()
        task = asyncio.create_task(_keep_alive(msg, self.c.ack_wait_s / 3, stop))
        try:
            yield
        finally:
            stop.set()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @contextlib.asynccontextmanager
    async def _locked(self, body: Any, delivery: Delivery) -> AsyncIterator[bool]:
        lock = self.c.lock
        if lock is None:
            yield True
            return
        assert self.rt.lock_pool is not None
        key = lock.key(body)
        async with self.rt.lock_pool.acquire() as conn:
            if lock.wait_s is None:
                got = bool(await conn.fetchval(_TRY_LOCK, key))
            else:
                # Wait while another replica holds it (its death releases the lock).
                await conn.execute(_LOCK, key, timeout=lock.wait_s)
                got = True
            if not got:
                log.info("%s is held by another worker; retry later", key)
                delivery.retry(lock.busy_retry_s)
                yield False
                return
            delivery.conn = conn
            try:
                yield True
            finally:
                delivery.conn = None
                with contextlib.suppress(Exception):
                    await conn.execute(_UNLOCK, key)

    # -- batches ----------------------------------------------------------------------------

    async def _batch(self, msgs: list[Msg]) -> None:
        items: list[tuple[Msg, Any]] = []
        for msg in msgs:
            if self._skip(msg):
                await msg.ack()
                self.rt.counters.skipped += 1
                continue
            try:
                items.append((msg, self._decode(msg)))
            except POISON_ERRORS as exc:
                await self._poison(msg, exc)
        if not items:
            return
        handler = self.c.batch_handler
        assert handler is not None
        try:
            # One CONSUMER span for the batch, linked to each message's creation context.
            with batch_span(self.c, [msg for msg, _ in items]):
                await handler([(body, Delivery(msg)) for msg, body in items])
        except Exception as exc:
            if len(items) == 1:
                await self._failed(items[0][0], exc)
                return
            # Find the message that cannot be applied: the others go on, one at a time.
            log.warning(
                "consumer %s: batch of %d failed (%s); applying one by one",
                self.c.name,
                len(items),
                exc,
            )
            for msg, body in items:
                try:
                    await handler([(body, Delivery(msg))])
                except Exception as one:
                    await self._failed(msg, one)
                else:
                    await msg.ack()
                    self.rt.counters.handled += 1
            return
        for msg, _ in items:
            await msg.ack()
        self.rt.counters.handled += len(items)

    async def _failed(self, msg: Msg, exc: BaseException) -> None:
        if isinstance(exc, POISON_ERRORS):
            await self._poison(msg, exc)
        else:
            log.warning(
                "consumer %s failed on %s: %s; will be redelivered", self.c.name, msg.subject, exc
            )
            await self._nak(msg)

    # -- outcomes ---------------------------------------------------------------------------

    async def _nak(self, msg: Msg) -> None:
        delivered = msg.metadata.num_delivered if msg.reply else 1
        with contextlib.suppress(Exception):
            await msg.nak(delay=REDELIVERY.delay(delivered))
        self.rt.counters.retried += 1

    async def _poison(self, msg: Msg, exc: BaseException) -> None:
        reason = f"{type(exc).__name__}: {exc}"
        try:
            if self.c.fail_run:
                await self._fail_run(msg, reason)
            await dead_letter(
                self.rt.js, msg, stream=self.c.stream, consumer=self.c.durable, reason=reason
            )
            await msg.ack()
        except Exception:
            log.exception("consumer %s could not set apart a poison message", self.c.name)
            await self._nak(msg)
            return
        self.rt.counters.dead_lettered += 1

    async def _fail_run(self, msg: Msg, reason: str) -> None:
        events = self.rt.events
        run_id = run_of(msg)
        if events is None or run_id is None:
            return
        try:
            created = await events.first(run_id)
            if created is None:  # no such run: nothing to end
                return
            await events.append(
                run_id,
                created.event.tenant_id,
                RunFailed(
                    error=f"A message of this run could not be processed and was set apart "
                    f"({self.c.name}): {reason[:500]}",
                    reason="poison_message",
                ),
                event_id=f"{run_id}:poison",
                check_existing=True,
            )
        except RunClosed:
            return
        except POISON_ERRORS as exc:  # the run's own log is unreadable: nobody can end it
            log.warning("run %s cannot be ended after poison: %s", run_id, exc)
            return
        finally:
            events.forget(run_id)
        self.rt.counters.runs_failed += 1


def batch_span(consumer: Consumer[Any], msgs: Sequence[Msg]) -> Any:
    """`process {template}` for a batch: no parent, a link to each message's creation context.

    The links are made only when spans are exported, and only to messages of a trace that is
    kept (sampled, as their traceparent says): a span that is not recorded drops them, a link
    to a trace that was not kept leads nowhere, and reading every message's context costs
    more than the rest of the span (the archive's batches are 256 messages)."""
    links = [
        trace.get_current_span(context_from_headers(m.headers)).get_span_context()
        for m in (msgs if exporting() else ())
        if sampled(m.headers)
    ]
    return work_span(
        f"process {destination_template(consumer.filter_subject)}",
        parent=otel_context.Context(),
        kind=SpanKind.CONSUMER,
        links=links,
        attributes={
            "messaging.system": "nats",
            "messaging.operation.type": "process",
            "messaging.consumer.group.name": consumer.durable,
            "messaging.batch.message_count": len(msgs),
        },
    )


class _StatsCollector(Collector):
    """The consumers' counters of this process, as Prometheus counters."""

    OUTCOMES = (
        ("handled", "ok"),
        ("skipped", "skipped"),
        ("retried", "retry"),
        ("dead_lettered", "dead_letter"),
    )

    def collect(self) -> Any:
        processed = CounterMetricFamily(
            "runloom_messages_processed",
            "Messages taken by a durable consumer, by outcome: ok (applied and acked), skipped "
            "(another event type, acked unread), retry (handed back), dead_letter (set apart)",
            labels=["stream", "durable", "outcome"],
        )
        failed = CounterMetricFamily(
            "runloom_poison_runs_failed",
            "Runs ended with run.failed because one of their messages was poison",
            labels=["stream", "durable"],
        )
        for name, st in list(STATS.items()):
            stream, durable = name.split("/", 1)
            for attr, outcome in self.OUTCOMES:
                processed.add_metric([stream, durable, outcome], getattr(st, attr))
            failed.add_metric([stream, durable], st.runs_failed)
        yield processed
        yield failed


REGISTRY.register(_StatsCollector())


def run_of(msg: Msg) -> str | None:
    """The run a message names (its subject, or its `run_id`), read leniently: it may be
    malformed. None when it names none, or nothing that can be a run id."""
    with contextlib.suppress(ValueError):
        run_id: Any = subjects.run_id_of(msg.subject)
        return run_id if _RUN_ID.match(run_id) else None
    try:
        data = msgspec.json.decode(msg.data)
    except Exception:
        return None
    run_id = data.get("run_id") if isinstance(data, dict) else None
    return run_id if isinstance(run_id, str) and _RUN_ID.match(run_id) else None


async def _keep_alive(msg: Msg, every: float, stop: asyncio.Event) -> None:
    while not stop.is_set():
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=every)
        if stop.is_set():
            return
        with contextlib.suppress(Exception):
            await msg.in_progress()


_TRY_LOCK = "SELECT pg_try_advisory_lock(hashtextextended($1, 7))"
_LOCK = "SELECT pg_advisory_lock(hashtextextended($1, 7))"
_UNLOCK = "SELECT pg_advisory_unlock(hashtextextended($1, 7))"
