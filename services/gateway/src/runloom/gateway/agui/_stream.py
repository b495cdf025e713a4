"""A run's AG-UI stream from any position: stored events in, SSE bytes with durable ids out.

Each AG-UI event is one SSE frame whose `id:` is `<cursor>.<n>`: the gateway's own durable
cursor of the stored event it comes from (`_cursor`), and its place among that event's AG-UI
events. Resuming after `<cursor>.<n>` replays the run's history through the projection from
its start (pure, so it yields the same frames again), sends nothing up to and including that
frame, then a prelude without ids (`View.prelude`: `RUN_STARTED`, snapshots, whatever is open
re-opened) when the client joins inside a run part, then every frame after it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from runloom.contracts.events import decode_event
from runloom.gateway import _cursor
from runloom.gateway._history import Frame
from runloom.gateway.agui._mapping import Projection
from runloom.gateway.agui._view import AguiEvent, View

WHOLE = 1 << 30
"""As a frame index: every AG-UI event of that stored event."""


@dataclass(frozen=True)
class Position:
    """Where a client is: it has every frame of events before `seq`, and frames 0..`index`
    of event `seq` (`WHOLE`: all of them)."""

    seq: int
    index: int


def frame_id(cursor: str, index: int) -> str:
    return f"{cursor}.{index}"


def parse_id(text: str) -> tuple[_cursor.Cursor, int]:
    """The stored event's cursor and the frame index of an AG-UI SSE id."""
    head, dot, tail = text.rpartition(".")
    if not dot or not tail.isdigit() or len(tail) > 6:
        raise _cursor.CursorError(
            "This is not an AG-UI event id of this gateway. Send back exactly the `id` of the "
            "last event received (Last-Event-ID), or none for the whole run."
        )
    return _cursor.decode(head), int(tail)


def encode(ev: AguiEvent, sse_id: str | None) -> bytes:
    data = json.dumps(ev, separators=(",", ":"), ensure_ascii=False).encode()
    if sse_id is None:
        return b"data: %s\n\n" % data
    return b"id: %s\ndata: %s\n\n" % (sse_id.encode(), data)


class Renderer:
    """Turns a run's frames (seq order, from its start) into AG-UI SSE bytes after `after`."""

    def __init__(
        self,
        run_id: str,
        after: Position | None = None,
        *,
        one_part: bool = False,
        history: list[dict[str, Any]] | None = None,
    ) -> None:
        self.projection = Projection(run_id, history)
        self.after = after
        self.pending = after is not None
        """The prelude is still due (the client's position is not passed yet)."""
        self.one_part = one_part
        """End the stream when a run part ends (a POST answers one AG-UI run)."""
        self.done = False
        self._position_view: View | None = None

    def events(self, frame: Frame) -> list[tuple[str | None, AguiEvent]]:
        """(SSE id, AG-UI event) pairs for one stored frame."""
        if frame.type == "reset":
            return self._lost(frame)
        ev = decode_event(frame.raw)
        after = self.after
        if self.pending and after is not None and ev.seq < after.seq:
            self.projection.feed(ev)  # before the client's position: folded, not sent
            return []
        view = self.projection.view.copy() if self.pending else None
        out: list[tuple[str | None, AguiEvent]] = []
        for i, agui in enumerate(self.projection.feed(ev)):
            if view is not None and after is not None and ev.seq == after.seq and i <= after.index:
                view.apply(agui)
                continue
            if view is not None:
                self.pending = False
                out.extend((None, p) for p in view.prelude(agui.get("timestamp")))
                view = None
            out.append((frame_id(frame.cursor, i), agui))
            if agui["type"] in ("RUN_FINISHED", "RUN_ERROR") and self.one_part:
                self.done = True
                break
        return out

    def render(self, frame: Frame) -> bytes:
        return b"".join(encode(ev, sse_id) for sse_id, ev in self.events(frame))

    def until(self, frame: Frame) -> bool:
        """The stream ends after this frame."""
        return self.done or frame.terminal

    def _lost(self, frame: Frame) -> list[tuple[str | None, AguiEvent]]:
        # Neither the hot window nor the archive holds part of this run: an AG-UI stream
        # cannot be continued exactly, and says so instead of guessing.
        self.done = True
        out: list[tuple[str | None, AguiEvent]] = []
        if not self.projection.view.open:
            out.extend(
                (None, e)
                for e in View(
                    self.projection.thread_id, self.projection.run_id, open=True
                ).prelude()
            )
        out.append(
            (
                None,
                {
                    "type": "RUN_ERROR",
                    "code": "history_unavailable",
                    "message": json.loads(frame.raw).get("reason", "history unavailable"),
                },
            )
        )
        return out
