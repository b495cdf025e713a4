"""Follow a run's events to its end: SSE from a cursor, resumed after any drop, never repeating.

State comes only from the shared fold (`runloom.runtime.runstate.fold`). The cursor moves past
an event only once it is folded, redeliveries (`seq <= last_seq`) are skipped, and a gap (a
`seq` beyond `last_seq + 1`) is filled from the JSON history before going on, so the view
shows every event once, in order.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, Protocol

import httpx
import msgspec
from runloom.contracts.events import Event, decode_event, event_from
from runloom.runtime.runstate import RunState, fold

from runloom.cli._gateway import IDLE, OPENED, Gateway, Unavailable
from runloom.cli._view import status_text

MAX_PAUSE_S = 2.0
"""Longest pause between reconnects (0.25 s doubling): a gateway or a NATS leader that comes
back is found within 2 s (a leader election alone takes 4-9 s, and a 5 s cap added up to
another 4 s after it)."""


class View(Protocol):
    def show(self, before: RunState, after: RunState, event: Event) -> None: ...
    def connection_lost(self, attempt: int, reason: str) -> None: ...
    def reconnected(self, after_seq: int) -> None: ...
    def notice(self, text: str) -> None: ...


class Follower:
    def __init__(
        self,
        gateway: Gateway,
        run_id: str,
        view: View,
        on_event: Callable[[RunState, Event], None] | None = None,
    ) -> None:
        self.gateway = gateway
        self.run_id = run_id
        self.view = view
        self.on_event = on_event
        """Called after each new event is shown (e.g. to prompt for a clarification)."""
        self.state = RunState()
        self.cursor: str | None = None
        self.drops = 0
        self.stalled: Any = None
        """The run's pause last told (`stalled` of the run resource), so it is told once."""

    def run(self) -> RunState:
        """Follow until the terminal event; reconnects with backoff (Ctrl-C propagates)."""
        attempt = 0
        while self.state.terminal is None:
            wait = 0.0
            try:
                self._stream_once()
                if self.state.terminal is not None:
                    break
                reason = "the stream ended before the run did"
            except (httpx.TransportError, httpx.StreamError) as exc:
                reason = type(exc).__name__
            except Unavailable as exc:
                reason, wait = str(exc), exc.retry_after_s
            attempt += 1
            self.drops += 1
            self.view.connection_lost(attempt, reason)
            time.sleep(max(wait, min(0.25 * 2 ** (attempt - 1), MAX_PAUSE_S)))
            # The gateway may be down: wait for it without spamming, each try is one request.
            try:
                before = self.state.last_seq
                self._catch_up()
            except (httpx.TransportError, httpx.StreamError):
                continue
            except Exception as exc:  # a CliError for "unreachable" while it restarts
                if getattr(exc, "code", None) == 3:
                    continue
                raise
            attempt = 0
            self.view.reconnected(before)
        return self.state

    def _stream_once(self) -> None:
        for msg in self.gateway.stream(self.run_id, self.cursor):
            if msg.event == OPENED:
                continue
            if msg.event == IDLE:
                self._idle()
                continue
            if msg.event == "reset":
                self._reset(json.loads(msg.data), msg.id)
                continue
            try:
                event = decode_event(msg.data)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                self.view.notice(f"skipped a malformed stream message: {exc}")
                continue
            self._apply(event, msg.id)
            if self.state.terminal is not None:
                return

    def _idle(self) -> None:
        """The run said nothing for a heartbeat: one line if it is paused without an event
        saying so (`stalled`, the event store full), and why and until when; best effort."""
        try:
            run = self.gateway.request("GET", f"/v1/runs/{self.run_id}")
        except Exception:  # the stream itself says when the gateway is away
            return
        stalled = run.get("stalled") if isinstance(run, dict) else None
        if stalled and stalled != self.stalled:
            self.view.notice(status_text(run))
        self.stalled = stalled

    def _apply(self, event: Event, cursor: str | None) -> None:
        if event.seq <= self.state.last_seq:
            return  # a redelivery after a reconnect
        if event.seq > self.state.last_seq + 1:
            self._catch_up()
            if event.seq != self.state.last_seq + 1:
                return
        before = self.state
        self.state = fold([event], before)
        if cursor:
            self.cursor = cursor
        self._shown(before, event)

    def _catch_up(self) -> None:
        """Fold the stored history after the cursor (fills a gap, or catches up after a drop)."""
        for cursor, item in self.gateway.history(self.run_id, self.cursor):
            if item.get("type") == "reset":
                self._reset(item, cursor)
                continue
            event = event_from(item)
            if event.seq == self.state.last_seq + 1:
                before = self.state
                self.state = fold([event], before)
                self.cursor = cursor
                self._shown(before, event)
            elif event.seq <= self.state.last_seq:
                self.cursor = cursor

    def _reset(self, body: dict[str, Any], cursor: str | None) -> None:
        """Part of the history is gone for good: carry on from the gateway's snapshot."""
        self.view.notice(f"the gateway reset the stream: {body.get('reason', '')}")
        self.state = msgspec.convert(body.get("snapshot", {}), RunState)
        if cursor:
            self.cursor = cursor

    def _shown(self, before: RunState, event: Event) -> None:
        self.view.show(before, self.state, event)
        if self.on_event is not None:
            self.on_event(self.state, event)
