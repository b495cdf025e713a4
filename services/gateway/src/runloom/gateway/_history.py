"""A run's history from any cursor: the hot window (JetStream), else the archive, else a reset.

`History.replay` yields frames in seq order with no gap: the stored events after a position,
read from the stream when it still holds them (positioned in O(1) by stream sequence,
filtered to the run's subject), from Postgres for what the hot window no longer holds, and
when neither can fill a gap, one `reset` frame carrying a state snapshot (fold) first.
"""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import msgspec
from nats.js import JetStreamContext
from runloom.contracts import subjects
from runloom.contracts.events import TERMINAL_TYPES, decode_event
from runloom.gateway import _cursor
from runloom.gateway.store.archive import PgArchive
from runloom.runtime import bus
from runloom.runtime.eventlog import DIRECT_READ_LIMIT, EventLog
from runloom.runtime.runstate import fold, snapshot


class Stored(Protocol):
    """What a frame needs of a stored event: an `Event`, or just its `Head`."""

    @property
    def run_id(self) -> str: ...
    @property
    def seq(self) -> int: ...
    @property
    def type(self) -> str: ...


class Head(msgspec.Struct):
    """The envelope fields a frame (and the latency metric) needs, decoded without the rest:
    a frame forwards the stored bytes as they are."""

    run_id: str
    seq: int
    type: str
    time: datetime


head_of = msgspec.json.Decoder(Head).decode


@dataclass(frozen=True)
class Frame:
    """One SSE event: its type, its stored bytes, its cursor."""

    seq: int
    stream_seq: int
    type: str
    raw: bytes
    cursor: str

    @property
    def terminal(self) -> bool:
        return self.type in TERMINAL_TYPES

    @functools.cached_property
    def _sse(self) -> bytes:
        # Stored JSON is one line; were it not, each line must be its own `data:` field.
        data = self.raw.replace(b"\n", b"\ndata: ") if b"\n" in self.raw else self.raw
        return b"event: %s\nid: %s\ndata: %s\n\n" % (self.type.encode(), self.cursor.encode(), data)

    def sse(self) -> bytes:
        """The SSE bytes, made once and shared by every client of the feed."""
        return self._sse

    @functools.cached_property
    def chunk(self) -> bytes:
        """The SSE bytes as one HTTP/1.1 chunk (for `BodyPush`), made once."""
        sse = self._sse
        return b"%x\r\n%b\r\n" % (len(sse), sse)

    def json_item(self) -> dict[str, object]:
        return {"cursor": self.cursor, "event": json.loads(self.raw)}


class Epoch:
    """The RUN_EVENTS stream's identity: its creation time (kept across a restore from a backup:
    `bus.created_ms`), refreshed when it may have changed."""

    def __init__(self, js: JetStreamContext) -> None:
        self.js = js
        self.value = ""

    async def refresh(self) -> str:
        info = await self.js.stream_info(subjects.RUN_EVENTS_STREAM)
        self.value = _cursor.epoch_of(bus.created_ms(info))
        return self.value

    async def current(self) -> str:
        return self.value or await self.refresh()


class History:
    def __init__(self, log: EventLog, archive: PgArchive, epoch: Epoch) -> None:
        self.log = log
        self.archive = archive
        self.epoch = epoch

    def frame(self, epoch: str, event: Stored, raw: bytes, stream_seq: int) -> Frame:
        cursor = _cursor.encode(epoch, event.run_id, event.seq, stream_seq)
        return Frame(event.seq, stream_seq, event.type, raw, cursor)

    async def position(self, cursor: _cursor.Cursor | None) -> tuple[int, int]:
        """(after_seq, after_stream_seq) to resume from; the stream position only if trusted."""
        if cursor is None:
            return 0, 0
        epoch = await self.epoch.current()
        if cursor.epoch != epoch:
            epoch = await self.epoch.refresh()
        return cursor.seq, cursor.stream_seq if cursor.epoch == epoch else 0

    async def replay(
        self,
        run_id: str,
        after_seq: int,
        after_stream_seq: int,
        *,
        any_replica: bool = False,
        last_seq: int | None = None,
    ) -> AsyncIterator[Frame]:
        """Every stored event after the position, in order, once, then stop.

        With `any_replica` the stream's answers may come from a replica that is behind (see
        `EventLog.read`): the replay never waits for a stream leader and may end early, for a
        caller that knows how far the run went (the SSE stream: its feed). A reset is never
        decided on such answers: the rest is then replayed on the leader's.

        `last_seq`: the run's last seq as the caller last saw it (a live feed's high-water
        mark); a backlog that short is read from the stream alone."""
        epoch = await self.epoch.current()
        next_seq = after_seq + 1
        sent_stream = after_stream_seq
        """Stream position of the last frame yielded (where a confirmed replay would go on)."""
        # A long backlog is served from the archive first, a page of rows per query (far
        # cheaper than a message each), then the stream from where the archive stops. A short
        # one costs a direct get or two in the stream, not two queries: what the stream no
        # longer holds is still read from the archive below.
        archived = False
        if last_seq is None or last_seq - after_seq > DIRECT_READ_LIMIT:
            async for frame in self._archived(epoch, run_id, next_seq, None):
                next_seq = frame.seq + 1
                after_stream_seq = max(after_stream_seq, frame.stream_seq)
                sent_stream = frame.stream_seq or sent_stream
                archived = True
                yield frame
        after_seq = next_seq - 1
        hot = await self.log.first(run_id, after_stream_seq, any_replica=any_replica)
        if hot is None and archived:
            # Nothing after the archived position; unless that position is from a stream
            # that was since reset (another epoch): then the run's tail says otherwise.
            tail = await self.log.tail(run_id, any_replica=any_replica)
            if tail.run_seq > after_seq and tail.stream_seq > 0:
                after_stream_seq = 0
                hot = await self.log.first(run_id, 0, any_replica=any_replica)
        if hot is not None and hot.event.seq <= after_seq:
            # The stream position was not trusted (another epoch): find the seq by scanning.
            hot = None
            reader = self.log.read(
                run_id, after_stream_seq=after_stream_seq, any_replica=any_replica
            )
            async for se in reader:
                if se.event.seq >= next_seq:
                    hot = se
                    break
        hot_from = hot.event.seq if hot is not None else None
        if hot_from is None or hot_from > next_seq:
            # The hot window does not reach back that far: the archive serves the older part;
            # a hole neither holds becomes one explicit reset, never a silent gap.
            while True:
                async for frame in self._archived(epoch, run_id, next_seq, hot_from):
                    next_seq = frame.seq + 1
                    sent_stream = frame.stream_seq or sent_stream
                    yield frame
                resume_at = await self._next_archived(run_id, next_seq - 1, hot_from)
                if resume_at is None:
                    break
                if any_replica:  # the stream may hold it after all: ask its leader
                    async for frame in self.replay(run_id, next_seq - 1, sent_stream):
                        yield frame
                    return
                yield await self._reset(epoch, run_id, next_seq, resume_at)
                next_seq = resume_at
            if hot_from is not None and hot_from > next_seq:
                if any_replica:
                    async for frame in self.replay(run_id, next_seq - 1, sent_stream):
                        yield frame
                    return
                yield await self._reset(epoch, run_id, next_seq, hot_from)
                next_seq = hot_from
        if hot is None:
            return
        yield self.frame(epoch, hot.event, hot.raw, hot.stream_seq)
        next_seq = hot.event.seq + 1
        rest = self.log.read(run_id, after_stream_seq=hot.stream_seq, any_replica=any_replica)
        async for se in rest:
            if se.event.seq < next_seq:
                continue
            if se.event.seq > next_seq:  # never forward a gap
                raise RuntimeError(
                    f"run {run_id}: stream skips from {next_seq - 1} to {se.event.seq}"
                )
            yield self.frame(epoch, se.event, se.raw, se.stream_seq)
            next_seq += 1

    async def _archived(
        self, epoch: str, run_id: str, next_seq: int, before: int | None
    ) -> AsyncIterator[Frame]:
        while True:
            page = await self.archive.read(
                run_id, after_seq=next_seq - 1, before_seq=before, limit=1000
            )
            if not page:
                return
            for row in page:
                if row.seq != next_seq:
                    return  # a hole in the archive: the caller resets
                yield self.frame(epoch, head_of(row.raw), row.raw, row.stream_seq or 0)
                next_seq += 1

    async def _next_archived(self, run_id: str, after: int, before: int | None) -> int | None:
        """The first archived seq beyond a hole starting at `after` (None if none)."""
        page = await self.archive.read(run_id, after_seq=after, before_seq=before, limit=1)
        return page[0].seq if page else None

    async def _reset(self, epoch: str, run_id: str, missing_from: int, hot_from: int) -> Frame:
        """Neither the stream nor the archive holds seq missing_from..hot_from-1."""
        events = [decode_event(r.raw) for r in await self.archive.read(run_id, limit=100_000)]
        state = fold(e for e in events if e.seq < hot_from)
        body = {
            "type": "reset",
            "run_id": run_id,
            "seq": hot_from - 1,
            "reason": (
                f"events {missing_from}..{hot_from - 1} of this run are no longer available; "
                "replace your state with this snapshot and carry on"
            ),
            "snapshot": snapshot(state),
        }
        raw = json.dumps(body, separators=(",", ":")).encode()
        cursor = _cursor.encode(epoch, run_id, hot_from - 1, 0)
        return Frame(hot_from - 1, 0, "reset", raw, cursor)
