"""The run event log: ordered, deduplicated appends from any number of concurrent writers.

Each run is one subject on RUN_EVENTS. An append claims the next dense `seq` of the run and
publishes with `Nats-Expected-Last-Subject-Sequence` set to the stream sequence of the run's
last message (optimistic concurrency); a writer that loses the race re-reads the tail and
retries. `Nats-Msg-Id` is the event id, so a retry within the dedup window is dropped.

The server checks the expected sequence before dedup, so a retry with a stale expectation is
rejected rather than recognised as a duplicate; and after the dedup window a retry is not
recognised at all. Before every retry that follows an uncertain outcome (timeout, lost
connection, conflict) the writer therefore looks for its own event id in the run's tail and
returns the stored event if it is there: an event is appended at most once.

Group commit: appends to one run wait in that run's queue, in call order, while the run's
previous group is being stored; several waiting together go as one JetStream atomic batch
(`atomic.py`): the expected sequence on its first message, one round trip, all or nothing.
Runs have queues of their own, so appends to different runs pipeline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict, deque
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec
import nats.errors
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.api import Header as NatsHeader
from nats.js.errors import (
    APIError,
    NoStreamResponseError,
    NotFoundError,
    ServiceUnavailableError,
)
from runloom.contracts import subjects
from runloom.contracts.events import (
    EVENT_TYPES,
    TERMINAL_TYPES,
    Event,
    EventType,
    data_of,
    decode_event,
    encode_event,
    type_of,
)
from runloom.contracts.headers import Header
from runloom.contracts.ids import ulid
from runloom.contracts.types import now
from runloom.runtime import atomic, metrics
from runloom.runtime.retry import Backoff
from runloom.runtime.telemetry import producer_span

log = logging.getLogger(__name__)
_encoder = msgspec.json.Encoder()

WRONG_LAST_SEQUENCE = frozenset({10071, 10164})
"""JetStream's error codes for a failed expected-last-(subject-)sequence check: 10071 from a
single server, 10164 (same description, no sequence) from the leader of a replicated stream."""
TRANSIENT_ERRORS = (
    nats.errors.TimeoutError,
    nats.errors.ConnectionClosedError,
    nats.errors.NoRespondersError,
    NoStreamResponseError,
    ServiceUnavailableError,
    TimeoutError,
)
"""What a server away or a stream between leaders (an election in a cluster) raises: retried.
ServiceUnavailableError is JetStream's 503 (10008 'temporarily unavailable'), which a node
answers while it catches up after a partition heals."""
AWAY = Backoff(first_s=0.05, step_s=0.05, factor=1.0, max_s=1.0)
"""Pause before trying again while the server is away (0.05 s, 0.1 s, … up to 1 s)."""
CONFLICT = Backoff(first_s=0.0, step_s=0.001, factor=1.0, max_s=0.01, jitter=1.0)
"""Pause after losing a race to another writer: short, random, growing to 20 ms at most."""
DIRECT_READ_LIMIT = 32
"""Reads longer than this go on with a filtered consumer instead of one direct get each."""
TAIL_CACHE = 10_000
"""How many runs' tails a writer remembers (least recently used are forgotten)."""
BATCH_MIN = 8
"""Fewer appends than this waiting for one run go one at a time. On a single nats-server with
file storage a batch costs about 4-5 ms whatever its size (the server stages it in a store of
its own) and one append about 0.6 ms, so a batch pays off from about 8 events on."""
MAX_BATCH_BYTES = 4 * 1024 * 1024
"""A group stops growing past this many bytes of event data (the server stages it whole)."""


class AppendConflict(Exception):
    """Too many lost races in a row (the bounded retries ran out)."""


class StoreUnavailable(AppendConflict):
    """The bounded retries ran out while the stream did not answer (no quorum, servers away).

    The outcome of the last try is unknown: retry with the same event id (`check_existing`)."""


class StoreFull(StoreUnavailable):
    """JetStream refused the append for want of space: the server's storage limit
    (`max_file_store`, 'insufficient resources') or the stream's own (`max_bytes`). Nothing was
    stored; the same append succeeds once space is back (events age out, space is freed, or
    a limit is raised)."""


STORE_FULL_CODES = frozenset({10023, 10047})
"""JetStream's 'insufficient resources' and 'insufficient storage resources available'."""
STREAM_LIMIT_CODE = 10077
"""JetStream's 'store failed', which also says a stream's limit with discard new was reached
('maximum bytes exceeded', 'maximum messages exceeded')."""


def is_store_full(exc: BaseException) -> bool:
    """Whether `exc` is JetStream refusing a message for want of space (see `StoreFull`)."""
    if isinstance(exc, StoreFull):
        return True
    code = getattr(exc, "err_code", None)
    if code in STORE_FULL_CODES:
        return True
    return code == STREAM_LIMIT_CODE and "maximum" in str(getattr(exc, "description", ""))


_refused_full = False
"""This process's latest append was refused as `StoreFull` (the `runloom_event_store_full`
gauge is 1): the next one stored sets it back, a flag test away from the append path."""


def _stored_again() -> None:
    global _refused_full
    _refused_full = False
    metrics.STORE_FULL.set(0)
    log.warning("the event store takes appends again")


class RunClosed(Exception):
    """The run already ended: nothing may follow its terminal event."""

    def __init__(self, run_id: str, terminal: Event) -> None:
        super().__init__(f"run {run_id} already ended with {terminal.type} (seq {terminal.seq})")
        self.terminal = terminal


class Archive(Protocol):
    """What the log asks the long-term archive (Postgres `run_events`) when it has one."""

    async def last(self, run_id: str) -> Event | None:
        """The run's last archived event, if any."""
        ...

    async def find(self, run_id: str, event_id: str) -> Event | None:
        """An archived event of the run, by id."""
        ...

    async def max_stream_seq(self, run_id: str) -> int:
        """The highest stream position archived for the run (0 if none)."""
        ...


@dataclass(frozen=True)
class StoredEvent:
    """An event as stored: its stream position and its exact bytes."""

    stream_seq: int
    raw: bytes
    event: Event


@dataclass
class Tail:
    """Where a run's subject ends: the last stored message's stream position and run seq."""

    stream_seq: int
    """The stream sequence of the run's last message (0: none); the expected one to append."""
    run_seq: int
    """The run's last `seq` (0: no event yet)."""
    terminal: Event | None = None
    """The terminal event, when the run has ended."""


@dataclass(eq=False)
class _Pending:
    """An append waiting in its run's queue, and the callers waiting for its answer."""

    tenant_id: str
    event_id: str
    type: EventType
    data: dict[str, Any]
    causation_id: str | None
    trace: str | None
    headers: dict[str, str]
    size: int
    futures: list[asyncio.Future[Event]]
    """One per caller, each awaited by its caller alone: a caller that gives up cancels its own."""

    @property
    def abandoned(self) -> bool:
        """Every caller gave up before an answer (their futures were cancelled)."""
        return all(f.done() for f in self.futures)


@dataclass(eq=False)
class _RunQueue:
    """One run's waiting appends, in call order, and the task committing them."""

    pending: deque[_Pending] = field(default_factory=deque)
    by_id: dict[str, _Pending] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None
    inline: bool = False
    """A caller is storing its own append (the run was idle): the rest wait for it."""


_APPENDED = {t: metrics.EVENTS_APPENDED.labels(t) for t in EVENT_TYPES}
"""The appended-events counter of each type, looked up once."""
_TRACEPARENT = "traceparent"


class EventLog:
    def __init__(
        self,
        js: JetStreamContext,
        producer: str,
        *,
        max_retries: int = 64,
        publish_timeout: float = 5.0,
        archive: Archive | None = None,
        batch_min: int = BATCH_MIN,
        max_batch: int = atomic.MAX_MESSAGES,
    ) -> None:
        """`archive` answers for runs whose messages the hot window (max_age) already dropped;
        `batch_min` and `max_batch` bound the group commit (see `_commit`)."""
        self.js = js
        self.producer = producer
        self.max_retries = max_retries
        self.publish_timeout = publish_timeout
        self.archive = archive
        self.batch_min = max(2, batch_min)
        self.max_batch = min(max_batch, atomic.MAX_MESSAGES)
        self._tails: OrderedDict[str, Tail] = OrderedDict()
        self._queues: dict[str, _RunQueue] = {}
        self._atomic: bool | None = None
        """Whether RUN_EVENTS allows atomic batches (asked once; None until then)."""
        self._replicas: int | None = None
        """RUN_EVENTS' replica count (asked once; None until then)."""

    # -- reading ----------------------------------------------------------------------------

    async def tail(self, run_id: str, *, any_replica: bool = False) -> Tail:
        """The run's last stored message, read from the server (or from the archive).

        On a replicated stream the leader answers; `any_replica` lets any replica answer
        (one direct get, cheaper) where a view a little behind does no harm (see `_get`)."""
        msg = await self._get(subject=subjects.run_events(run_id), any_replica=any_replica)
        if msg is None:
            # An empty subject is a new run, or one whose messages outlived the hot window:
            # then the archive knows its last seq, and numbering goes on from there.
            last = await self.archive.last(run_id) if self.archive is not None else None
            if last is None:
                return Tail(0, 0)
            return Tail(0, last.seq, last if last.type in TERMINAL_TYPES else None)
        ev = decode_event(msg.data)  # type: ignore[arg-type]
        return Tail(msg.seq or 0, ev.seq, ev if ev.type in TERMINAL_TYPES else None)

    async def first(
        self, run_id: str, after_stream_seq: int = 0, *, any_replica: bool = False
    ) -> StoredEvent | None:
        """The run's first stored message after a stream position (one direct get, O(1); when
        it finds none on a replicated stream, the leader is asked too, unless `any_replica`)."""
        msg = await self._get(
            seq=after_stream_seq + 1, subject=subjects.run_events(run_id), any_replica=any_replica
        )
        if msg is None:
            return None
        raw = bytes(msg.data or b"")
        return StoredEvent(msg.seq or 0, raw, decode_event(raw))

    async def _get(
        self, *, seq: int | None = None, subject: str | None = None, any_replica: bool = False
    ) -> Any:
        """One stored message: by stream position (`seq`), the subject's next after it (both),
        or the subject's last (`subject` alone); None if there is none.

        A direct get is answered by any replica, and a replica that was paused, cut off or
        restarted answers from its old state until it has caught up (nats-server enables a
        follower's direct gets once it is 90% caught up and keeps them on while it falls
        behind). Its store is a prefix of the leader's, so a message it finds by position is
        the right one; "none" and "the subject's last" may be stale. On a replicated stream
        those are asked of the stream leader (the message API only the leader answers),
        unless `any_replica`."""
        next = seq is not None and subject is not None
        if seq is None and not any_replica and await self._replicated():
            return await self._leader_get(seq=seq, subject=subject, next=next)
        try:
            return await self.js.get_msg(
                subjects.RUN_EVENTS_STREAM, seq=seq, subject=subject, next=next, direct=True
            )
        except NotFoundError:
            if any_replica or not await self._replicated():
                return None
        return await self._leader_get(seq=seq, subject=subject, next=next)

    async def _leader_get(self, **request: Any) -> Any:
        try:
            return await self.js.get_msg(subjects.RUN_EVENTS_STREAM, direct=False, **request)
        except NotFoundError:
            return None

    async def _replicated(self) -> bool:
        """Has RUN_EVENTS more than one replica? (asked once)"""
        if self._replicas is None:
            info = await self.js.stream_info(subjects.RUN_EVENTS_STREAM)
            self._replicas = info.config.num_replicas or 1
        return self._replicas > 1

    async def read(
        self,
        run_id: str,
        *,
        after_stream_seq: int = 0,
        after_seq: int = 0,
        any_replica: bool = False,
    ) -> AsyncGenerator[StoredEvent, None]:
        """Every stored event of a run after a stream position (or run seq), in order, then stop.

        Positions in O(1) (a direct get of the subject's next message); a short read goes on
        with direct gets, a long one with a filtered ordered consumer (one pass over the
        stream, no round trip per message). On a replicated stream the end of the run is
        confirmed by the stream leader: a replica behind it never cuts a read short. With
        `any_replica` it is not (the read never waits for a leader, and may end early: for a
        reader that knows how far the run went and reads again when it falls short).
        """
        position = after_stream_seq
        for _ in range(DIRECT_READ_LIMIT):
            se = await self.first(run_id, position, any_replica=any_replica)
            if se is None:
                return
            position = se.stream_seq
            if se.event.seq > after_seq:
                yield se
        try:
            async for se in self._consume(run_id, position, any_replica):
                position = se.stream_seq
                if se.event.seq > after_seq:
                    yield se
        except TRANSIENT_ERRORS as exc:
            # No consumer could be made or it went quiet (placed on a server that is away):
            # the rest one get at a time.
            log.info("reading %s: consumer failed (%r); going on with gets", run_id, exc)
        # The consumer stops where its server's copy ends, and that server may be a replica
        # still catching up: whatever follows comes from `first`, which asks the leader last.
        while (se := await self.first(run_id, position, any_replica=any_replica)) is not None:
            position = se.stream_seq
            if se.event.seq > after_seq:
                yield se

    async def _consume(
        self, run_id: str, after_stream_seq: int, any_replica: bool
    ) -> AsyncIterator[StoredEvent]:
        # An empty range would leave the consumer waiting: look before subscribing.
        if await self.first(run_id, after_stream_seq, any_replica=any_replica) is None:
            return
        config = js_api.ConsumerConfig(
            deliver_policy=js_api.DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=after_stream_seq + 1,
            inactive_threshold=30.0,
        )
        sub = await self.js.subscribe(
            subjects.run_events(run_id),
            stream=subjects.RUN_EVENTS_STREAM,
            ordered_consumer=True,
            config=config,
            pending_msgs_limit=-1,
            pending_bytes_limit=-1,
        )
        try:
            while True:
                msg = await sub.next_msg(timeout=self.publish_timeout)
                raw = bytes(msg.data)
                meta = msg.metadata
                yield StoredEvent(meta.sequence.stream, raw, decode_event(raw))
                if meta.num_pending == 0:
                    return
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def events(self, run_id: str) -> list[Event]:
        return [se.event async for se in self.read(run_id)]

    async def find(self, run_id: str, event_id: str, after_stream_seq: int = 0) -> Event | None:
        """Look for an event id among the run's stored events after a stream position.

        With an archive, archived events are looked up by id and only the unarchived tail is
        scanned; without one, every hot message of the run after `after_stream_seq` is.
        """
        if self.archive is not None and after_stream_seq == 0:
            found = await self.archive.find(run_id, event_id)
            if found is not None:
                return found
            after_stream_seq = await self.archive.max_stream_seq(run_id)
        async for se in self.read(run_id, after_stream_seq=after_stream_seq):
            if se.event.id == event_id:
                return se.event
        return None

    # -- writing ----------------------------------------------------------------------------

    async def append(
        self,
        run_id: str,
        tenant_id: str,
        payload: msgspec.Struct | None = None,
        *,
        type: EventType | None = None,
        data: dict[str, Any] | None = None,
        event_id: str | None = None,
        causation_id: str | None = None,
        trace: str | None = None,
        check_existing: bool = False,
    ) -> Event:
        """Append one event; returns it as stored (with its `seq`).

        Pass a deterministic `event_id` for an event that a crashed writer may append again
        (with `check_existing=True` the run is searched for it first); a random one is made
        otherwise. Raises RunClosed if the run already has its terminal event, and
        AppendConflict when `max_retries` attempts in a row lost their race;
        StoreUnavailable (an AppendConflict) when the last of them got no answer.

        Appends that are not awaited one by one (tasks, gather) are stored in the order they
        were called, and those waiting together for one run are committed together (group
        commit, see `_commit`). An append whose callers all gave up before it was sent is not
        sent; one already sent may still land, as any publish may.

        Each append is one PRODUCER span (its context goes in the message's headers and
        becomes the event's `trace` unless one is given), counted and timed in the event-log
        metrics.
        """
        subject = subjects.run_events(run_id)
        event_id = event_id or ulid()
        started = time.perf_counter()
        headers: dict[str, str] = {}
        with producer_span(subject, headers, message_id=event_id):
            if payload is not None:
                type = type_of(payload)
                data = data_of(payload)
            if type is None or type not in EVENT_TYPES:
                raise ValueError(f"unknown event type {type!r}")
            headers[Header.EVENT_TYPE] = type
            trace = trace or headers.get(_TRACEPARENT)
            event = await self._find_patiently(run_id, event_id) if check_existing else None
            if event is None:
                event = await self._submit(
                    run_id, tenant_id, event_id, type, data or {}, causation_id, trace, headers
                )
        metrics.APPEND_DURATION.observe(time.perf_counter() - started)
        counter = _APPENDED.get(event.type) or metrics.EVENTS_APPENDED.labels(event.type)
        counter.inc()
        return event

    async def _submit(
        self,
        run_id: str,
        tenant_id: str,
        event_id: str,
        type: EventType,
        data: dict[str, Any],
        causation_id: str | None,
        trace: str | None,
        headers: dict[str, str],
    ) -> Event:
        """Store an append in call order. `headers` carry the caller's trace context, taken
        now: a queued append goes out from another task.

        The appends to a run waiting together go out as one group from the run's own task
        (`_drain`). One that found the run idle and is still alone after a turn of the loop
        (a writer that awaits each append) is stored by its caller: no task to make and
        wake. Appends made meanwhile wait for it and go out as the next group."""
        future: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
        queue = self._queues.get(run_id)
        if queue is not None:
            same = queue.by_id.get(event_id)
            if same is not None and not same.abandoned:
                same.futures.append(future)  # the same event asked for twice: one append
                return await future
        item = _Pending(
            tenant_id=tenant_id,
            event_id=event_id,
            type=type,
            data=data,
            causation_id=causation_id,
            trace=trace,
            headers=headers,
            size=len(_encoder.encode(data)),
            futures=[future],
        )
        idle = queue is None
        if queue is None:
            queue = self._queues[run_id] = _RunQueue(inline=True)
        queue.pending.append(item)
        queue.by_id[event_id] = item
        if not idle:
            if queue.task is None and not queue.inline:
                queue.task = asyncio.create_task(self._drain(run_id, queue))
            return await future
        alone = False
        try:
            # One turn first, as `_drain` takes: appends issued together join this group.
            await asyncio.sleep(0)
            alone = len(queue.pending) == 1 and len(item.futures) == 1
            if alone:
                # Stored by this caller: out of `by_id`, so that a caller that gives up
                # while it is sent cancels no other's (the same id asked for again queues an
                # append of its own, which the server's dedup answers with this one).
                queue.pending.clear()
                del queue.by_id[event_id]
                await self._commit(run_id, queue, [item])
        except BaseException:
            if not alone:  # the caller gave up before its append was sent
                future.cancel()
            raise
        finally:
            queue.inline = False
            if queue.pending:
                queue.task = asyncio.create_task(self._drain(run_id, queue))
            elif self._queues.get(run_id) is queue:
                del self._queues[run_id]
        return future.result() if alone else await future

    async def _drain(self, run_id: str, queue: _RunQueue) -> None:
        """Commit the run's waiting appends, group after group, until none is left."""
        try:
            while queue.pending:
                # One turn of the loop first: appends issued together join this group, and a
                # caller that gave up in the meantime has said so.
                await asyncio.sleep(0)
                group = self._take(queue)
                if group:
                    await self._commit(run_id, queue, group)
        finally:
            queue.task = None
            for item in queue.pending:  # only when cancelled (the loop is shutting down)
                for future in item.futures:
                    future.cancel()
            queue.pending.clear()
            if self._queues.get(run_id) is queue:
                del self._queues[run_id]

    def _take(self, queue: _RunQueue) -> list[_Pending]:
        """The next group: waiting appends in call order, up to a terminal event included."""
        group: list[_Pending] = []
        size = 0
        while queue.pending and len(group) < self.max_batch:
            item = queue.pending[0]
            if group and size + item.size > MAX_BATCH_BYTES:
                break
            queue.pending.popleft()
            if item.abandoned:
                self._settle(queue, item, asyncio.CancelledError())
                continue
            group.append(item)
            size += item.size
            if item.type in TERMINAL_TYPES:
                break  # what follows it in the queue gets RunClosed from the next group
        return group

    def _settle(self, queue: _RunQueue, item: _Pending, outcome: Event | BaseException) -> None:
        if queue.by_id.get(item.event_id) is item:
            del queue.by_id[item.event_id]
        for future in item.futures:
            if future.done():  # its caller gave up
                continue
            if isinstance(outcome, Event):
                future.set_result(outcome)
            elif isinstance(outcome, asyncio.CancelledError):
                future.cancel()
            else:
                future.set_exception(outcome)

    async def _commit(self, run_id: str, queue: _RunQueue, group: list[_Pending]) -> None:
        """Store a group: one atomic batch when it is large enough, else one append at a time.

        A batch is all or nothing, so whatever it cannot settle for certain (a refusal other
        than a lost race, an id stored by another writer) is retried one append at a time,
        where each append gets the answer it would have got alone.
        """
        # An event near the message size limit goes alone (the publish says why it fails).
        try:
            events = None
            if (
                len(group) >= self.batch_min
                and max(item.size for item in group) < atomic.client_of(self.js).max_payload // 2
                and await self._batches_allowed()
            ):
                events = await self._store(run_id, group)
            if events is not None:
                for item, event in zip(group, events, strict=True):
                    self._settle(queue, item, event)
                return
            for item in group:
                if item.abandoned:  # its callers gave up before it was sent
                    self._settle(queue, item, asyncio.CancelledError())
                    continue
                try:
                    stored = await self._store(run_id, [item])
                    assert stored is not None  # one event alone is settled or raises
                    self._settle(queue, item, stored[0])
                except Exception as exc:
                    self._settle(queue, item, exc)
        except BaseException as exc:
            for item in group:
                self._settle(queue, item, exc)
            if not isinstance(exc, Exception):
                raise

    async def _batches_allowed(self) -> bool:
        """Does the stream say it allows atomic batches? A server that does not know them
        (< 2.12) would store a batch's messages one by one, unchecked: never send it one."""
        if self._atomic is None:
            info = await self.js.stream_info(subjects.RUN_EVENTS_STREAM)
            self._atomic = bool(info.config.allow_atomic)
            if not self._atomic:
                log.warning("RUN_EVENTS allows no atomic batch: appending one at a time")
        return self._atomic

    def _event(self, run_id: str, item: _Pending, seq: int) -> Event:
        return Event(
            id=item.event_id,
            run_id=run_id,
            tenant_id=item.tenant_id,
            seq=seq,
            type=item.type,
            time=now(),
            producer=self.producer,
            causation_id=item.causation_id,
            trace=item.trace,
            data=item.data,
        )

    async def _store(self, run_id: str, group: list[_Pending]) -> list[Event] | None:
        """Store a group with the expected subject sequence on its first message: one event
        as one publish, several as one atomic batch. Retried until settled.

        Returns the events as stored, or None when a batch must go one append at a time.

        At most once: an attempt that expected the subject's last message at position P can
        only be stored as the subject's next messages after P (a batch whole and
        contiguously). So after an uncertain outcome (timeout, lost connection, conflict,
        duplicate) the messages right after each P tried tell for sure whether that attempt
        landed. Going one at a time after a batch attempt whose outcome is still open is safe
        too: a batch lands within seconds of its commit or never (the server drops an idle
        batch after 10 s), well inside the duplicate window (>= 2 min), so each single append
        of an id that attempt stored is recognised as a duplicate.
        """
        alone = len(group) == 1
        subject = subjects.run_events(run_id)
        tail = self._tails.get(run_id)
        uncertain: set[int] = set()
        """Expected positions of attempts that may have landed."""
        unanswered: Exception | None = None
        """The last try's transient error (None: the last try was answered)."""
        for attempt in range(self.max_retries):
            unanswered = None
            try:
                if uncertain:
                    landed = await self._landed(run_id, group, uncertain)
                    if landed is not None:
                        self._remember(run_id, None)
                        return landed or None
                if tail is None:
                    # First any replica's view (a stale one is refused by the expected
                    # sequence check), after a refusal the leader's.
                    tail = await self.tail(run_id, any_replica=attempt == 0)
            except TRANSIENT_ERRORS as exc:
                # The stream is between leaders or the server is away: read again shortly.
                unanswered = exc
                await AWAY.sleep(attempt)
                continue
            if tail.terminal is not None:
                raise RunClosed(run_id, tail.terminal)
            events = [self._event(run_id, it, tail.run_seq + 1 + i) for i, it in enumerate(group)]
            messages = [
                (encode_event(event), {**item.headers, NatsHeader.MSG_ID: item.event_id})
                for item, event in zip(group, events, strict=True)
            ]
            messages[0][1][NatsHeader.EXPECTED_LAST_SUBJECT_SEQUENCE] = str(tail.stream_seq)
            try:
                if alone:
                    body, headers = messages[0]
                    ack = await atomic.publish(
                        self.js, subject, body, headers, timeout=self.publish_timeout
                    )
                else:
                    ack = await atomic.publish_batch(
                        self.js, subject, messages, timeout=self.publish_timeout
                    )
            except TRANSIENT_ERRORS as exc:
                if is_store_full(exc):
                    raise self._full(run_id, exc) from exc
                unanswered = exc
                metrics.APPEND_RETRIES.labels("timeout").inc()
                uncertain.add(tail.stream_seq)
                tail = None
                await AWAY.sleep(attempt)
                continue
            except APIError as exc:
                if exc.err_code in WRONG_LAST_SEQUENCE:
                    # Lost the race, or an earlier attempt of ours did land: re-read and look.
                    metrics.APPEND_CONFLICTS.inc()
                    uncertain.add(tail.stream_seq)
                    tail = None
                    await CONFLICT.sleep(attempt)
                    continue
                if is_store_full(exc):
                    raise self._full(run_id, exc) from exc
                if alone:
                    raise
                if exc.err_code == atomic.DUPLICATE_MSG_ID:
                    # Our own earlier attempt landed, or another writer stored one of the ids.
                    uncertain.add(tail.stream_seq)
                    landed = await self._landed(run_id, group, uncertain)
                    self._remember(run_id, None)
                    return landed or None
                if exc.err_code == atomic.NOT_ENABLED:
                    self._atomic = None  # the stream changed: ask again next time
                # Refused with nothing stored (too many open batches, ...): one at a time.
                return None
            if ack.duplicate:
                # Dropped by dedup: an event with this id is stored (an earlier attempt, or
                # a concurrent writer of the same event); the ack names its position.
                event_id = group[0].event_id
                found = await self._stored_at(ack.seq, run_id, event_id)
                if found is None:
                    found = await self.find(run_id, event_id)
                if found is not None:
                    self._remember(run_id, None)
                    return [found]
                uncertain.add(tail.stream_seq)
                tail = None
                continue
            last = events[-1]
            self._remember(
                run_id, Tail(ack.seq, last.seq, last if last.type in TERMINAL_TYPES else None)
            )
            if _refused_full:
                _stored_again()
            return events
        if unanswered is not None:
            raise self._unavailable(run_id, unanswered) from unanswered
        raise AppendConflict(f"append to {run_id} lost {self.max_retries} races in a row")

    def _full(self, run_id: str, exc: Exception) -> StoreFull:
        global _refused_full
        _refused_full = True
        metrics.STORE_FULL.set(1)
        metrics.APPENDS_REFUSED.labels("store_full").inc()
        log.warning("append to %s refused: the event store is full (%s)", run_id, exc)
        return StoreFull(
            f"append to {run_id}: the event store is full "
            f"({getattr(exc, 'description', None) or exc}); nothing was stored. It takes "
            "appends again once space is back (old events age out, the disk is freed, or the "
            "storage limit is raised)."
        )

    def _unavailable(self, run_id: str, last: Exception) -> StoreUnavailable:
        return StoreUnavailable(
            f"append to {run_id}: the event store did not answer {self.max_retries} tries "
            f"in a row (last: {type(last).__name__}); it stores nothing while fewer "
            "than a majority of a cluster's servers are up. The last try may have landed: "
            "retry with the same event id."
        )

    async def _find_patiently(self, run_id: str, event_id: str) -> Event | None:
        """`find` for an append that checks first, asked again while the store is away or a
        node catching up answers 503 (as the append itself is retried)."""
        unanswered: Exception | None = None
        for attempt in range(self.max_retries):
            try:
                return await self.find(run_id, event_id)
            except TRANSIENT_ERRORS as exc:
                unanswered = exc
                await AWAY.sleep(attempt)
        assert unanswered is not None
        raise self._unavailable(run_id, unanswered) from unanswered

    async def _stored_at(self, stream_seq: int, run_id: str, event_id: str) -> Event | None:
        """The event at a stream position, if it is this run's event with this id."""
        if not stream_seq:
            return None
        try:
            msg = await self.js.get_msg(subjects.RUN_EVENTS_STREAM, seq=stream_seq, direct=True)
            ev = decode_event(bytes(msg.data or b""))
        except (NotFoundError, msgspec.DecodeError, msgspec.ValidationError):
            return None
        return ev if ev.id == event_id and ev.run_id == run_id else None

    async def _landed(
        self, run_id: str, group: list[_Pending], positions: set[int]
    ) -> list[Event] | None:
        """Did an attempt that expected one of `positions` land? Drops settled positions.

        Returns the stored events if it did, None if no attempt is known to have, and an empty
        list when the group's first id is stored but not as this batch (another writer of the
        same event): then the group must go one append at a time.
        """
        ids = [item.event_id for item in group]
        for position in sorted(positions):
            nxt = await self.first(run_id, position)
            if nxt is None:
                continue  # nothing after it yet: that attempt may still land, or never will
            if nxt.event.id != ids[0]:
                positions.discard(position)  # another event holds that place
                continue
            stored = [nxt.event]
            if len(ids) > 1:
                reader = self.read(run_id, after_stream_seq=nxt.stream_seq)
                async with contextlib.aclosing(reader) as rest:
                    async for se in rest:
                        stored.append(se.event)
                        if len(stored) == len(ids):
                            break
            if [e.id for e in stored] == ids:
                return stored
            return []
        return None

    def _remember(self, run_id: str, tail: Tail | None) -> None:
        if tail is None:
            self._tails.pop(run_id, None)
            return
        self._tails[run_id] = tail
        self._tails.move_to_end(run_id)
        while len(self._tails) > TAIL_CACHE:
            self._tails.popitem(last=False)

    def expect_new(self, run_id: str) -> None:
        """A run id this process has just made has no events yet: its first append expects an
        empty subject instead of reading the tail first (if the guess were wrong, the expected
        sequence check would refuse the append and the tail would be read)."""
        if run_id not in self._tails:
            self._remember(run_id, Tail(0, 0))

    def forget(self, run_id: str) -> None:
        """Drop the cached tail of a run (e.g. when the run ended)."""
        with contextlib.suppress(KeyError):
            del self._tails[run_id]
