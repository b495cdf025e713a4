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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import msgspec
import nats.errors
from nats.js import JetStreamContext
from nats.js.errors import APIError, NotFoundError
from runloom.contracts import subjects
from runloom.contracts.events import (
    EVENT_TYPES,
    TERMINAL_TYPES,
    Event,
    data_of,
    decode_event,
    encode_event,
    type_of,
)
from runloom.contracts.ids import ulid
from runloom.runtime.telemetry import current_traceparent, inject_headers

log = logging.getLogger(__name__)

WRONG_LAST_SEQUENCE = 10071


class AppendConflict(Exception):
    """Too many lost races in a row (the bounded retries ran out)."""


class RunClosed(Exception):
    """The run already ended: nothing may follow its terminal event."""

    def __init__(self, run_id: str, terminal: Event) -> None:
        super().__init__(f"run {run_id} already ended with {terminal.type} (seq {terminal.seq})")
        self.terminal = terminal


@dataclass(frozen=True)
class StoredEvent:
    """An event as stored: its stream position and its exact bytes."""

    stream_seq: int
    raw: bytes
    event: Event


@dataclass
class _Tail:
    stream_seq: int
    run_seq: int
    terminal: Event | None = None


def now_rfc3339() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


class EventLog:
    def __init__(
        self,
        js: JetStreamContext,
        producer: str,
        *,
        max_retries: int = 64,
        publish_timeout: float = 5.0,
    ) -> None:
        self.js = js
        self.producer = producer
        self.max_retries = max_retries
        self.publish_timeout = publish_timeout
        self._tails: dict[str, _Tail] = {}

    # -- reading ----------------------------------------------------------------------------

    async def tail(self, run_id: str) -> _Tail:
        """The run's last stored message, read from the server."""
        try:
            msg = await self.js.get_last_msg(
                subjects.RUN_EVENTS_STREAM, subjects.run_events(run_id)
            )
        except NotFoundError:
            return _Tail(0, 0)
        ev = decode_event(msg.data)  # type: ignore[arg-type]
        return _Tail(msg.seq or 0, ev.seq, ev if ev.type in TERMINAL_TYPES else None)

    async def read(
        self, run_id: str, *, after_stream_seq: int = 0, after_seq: int = 0
    ) -> AsyncIterator[StoredEvent]:
        """Every stored event of a run after a stream position (or run seq), in order, then stop."""
        subject = subjects.run_events(run_id)
        try:
            last = await self.js.get_last_msg(subjects.RUN_EVENTS_STREAM, subject)
        except NotFoundError:
            return
        last_seq = last.seq or 0
        if after_stream_seq >= last_seq:
            return
        start = after_stream_seq + 1
        stream_seq = start - 1
        while stream_seq < last_seq:
            try:
                msg = await self.js.get_msg(
                    subjects.RUN_EVENTS_STREAM, seq=stream_seq + 1, subject=subject, next=True
                )
            except NotFoundError:
                return
            stream_seq = msg.seq or 0
            raw = bytes(msg.data or b"")
            ev = decode_event(raw)
            if ev.seq > after_seq:
                yield StoredEvent(stream_seq, raw, ev)

    async def events(self, run_id: str) -> list[Event]:
        return [se.event async for se in self.read(run_id)]

    async def find(self, run_id: str, event_id: str, after_stream_seq: int = 0) -> Event | None:
        """Look for an event id among the run's stored events after a stream position."""
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
        type: str | None = None,
        data: dict[str, Any] | None = None,
        event_id: str | None = None,
        causation_id: str | None = None,
        trace: str | None = None,
        check_existing: bool = False,
    ) -> Event:
        """Append one event; returns it as stored (with its `seq`).

        Pass a deterministic `event_id` for an event that a crashed writer may append again
        (with `check_existing=True` the run is searched for it first); a random one is made
        otherwise. Raises RunClosed if the run already has its terminal event.
        """
        if payload is not None:
            type = type_of(payload)
            data = data_of(payload)
        if type not in EVENT_TYPES:
            raise ValueError(f"unknown event type {type!r}")
        event_id = event_id or ulid()
        subject = subjects.run_events(run_id)
        trace = trace or current_traceparent()
        tail = self._tails.get(run_id)
        if check_existing:
            found = await self.find(run_id, event_id)
            if found is not None:
                return found
        uncertain_since: int | None = None
        for attempt in range(self.max_retries):
            if tail is None:
                tail = await self.tail(run_id)
            if uncertain_since is not None:
                found = await self.find(run_id, event_id, after_stream_seq=uncertain_since)
                if found is not None:
                    self._tails.pop(run_id, None)
                    return found
                uncertain_since = None
            if tail.terminal is not None:
                raise RunClosed(run_id, tail.terminal)
            event = Event(
                id=event_id,
                run_id=run_id,
                tenant_id=tenant_id,
                seq=tail.run_seq + 1,
                type=type,
                time=now_rfc3339(),
                producer=self.producer,
                causation_id=causation_id,
                trace=trace,
                data=data or {},
            )
            headers = inject_headers(
                {
                    "Nats-Msg-Id": event_id,
                    "Nats-Expected-Last-Subject-Sequence": str(tail.stream_seq),
                    "Runloom-Event-Type": type,
                }
            )
            try:
                ack = await self.js.publish(
                    subject, encode_event(event), headers=headers, timeout=self.publish_timeout
                )
            except APIError as exc:
                if exc.err_code == WRONG_LAST_SEQUENCE:
                    # Lost the race (or our earlier attempt did land): re-read and look.
                    uncertain_since = tail.stream_seq
                    tail = None
                    await asyncio.sleep(random.uniform(0, 0.002 * min(attempt, 10)))
                    continue
                raise
            except (nats.errors.TimeoutError, nats.errors.ConnectionClosedError, TimeoutError):
                uncertain_since = tail.stream_seq
                tail = None
                await asyncio.sleep(min(0.05 * (attempt + 1), 1.0))
                continue
            if ack.duplicate:
                self._tails.pop(run_id, None)
                found = await self.find(
                    run_id, event_id, after_stream_seq=max(0, tail.stream_seq - 1)
                )
                if found is not None:
                    return found
                tail = None
                continue
            self._tails[run_id] = _Tail(
                ack.seq, event.seq, event if type in TERMINAL_TYPES else None
            )
            return event
        raise AppendConflict(f"append to {run_id} lost {self.max_retries} races in a row")

    def forget(self, run_id: str) -> None:
        """Drop the cached tail of a run (e.g. when the run ended)."""
        with contextlib.suppress(KeyError):
            del self._tails[run_id]
