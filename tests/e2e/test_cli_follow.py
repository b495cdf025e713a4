"""The CLI's stream handling on its own: SSE parsing, and following a run through redeliveries,
a gap and dropped connections with every event shown once, in order.

The gateway here is a scripted stand-in for the HTTP client (the real one is exercised by
test_cli_ask.py against the running platform); it replays exactly what the gateway may send.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import msgspec
from runloom.contracts.events import Event
from runloom.runtime.runstate import RunState

from runloom.cli._follow import Follower
from runloom.cli._gateway import IDLE, OPENED, SseMessage, Unavailable, parse_sse


def test_sse_parser_follows_the_event_stream_rules() -> None:
    lines = [
        ": heartbeat",
        "event: step.started",
        "id: c1",
        'data: {"a":',
        "data: 1}",
        "",
        "data:no-space",
        "",
        "id: c2",
        "",  # an id alone dispatches nothing but is kept
        "event: run.completed",
        "data: x",
        "",
        "event: partial",
        "data: never dispatched without its blank line",
    ]
    got = list(parse_sse(iter(lines)))
    assert got == [
        SseMessage(IDLE, "", None),  # the heartbeat between messages: the run is quiet
        SseMessage("step.started", '{"a":\n1}', "c1"),
        SseMessage("message", "no-space", "c1"),
        SseMessage("run.completed", "x", "c2"),
    ]


RUN = "run_01JD6Q0W7XKZ3T9M4N5P6R8S2V"  # a well-formed run id: the envelope checks it


def _events(n: int) -> list[Event]:
    types = ["run.created", "run.started"] + ["step.progress"] * (n - 3) + ["run.completed"]
    data: list[dict[str, Any]] = [{"question": "q"}, {"worker": "w"}]
    data += [{"step_id": "s", "message": f"m{i}"} for i in range(n - 3)] + [{}]
    return [
        Event(
            id=f"e{i}",
            run_id=RUN,
            tenant_id="t",
            seq=i,
            type=t,
            time=datetime(2026, 1, 1, tzinfo=UTC),
            producer="p",
            data=d,
        )
        for i, (t, d) in enumerate(zip(types, data, strict=True), 1)
    ]


class ScriptedGateway:
    """Each stream() call plays the next script: (seq | "drop") items; history() is exact."""

    def __init__(self, events: list[Event], scripts: list[list[int | str]]) -> None:
        self.events = events
        self.scripts = scripts
        self.cursors: list[str | None] = []
        self.runs: list[dict[str, Any]] = []
        """What each GET of the run answers in turn ("idle" items ask)."""

    def stream(self, run_id: str, cursor: str | None) -> Iterator[SseMessage]:
        self.cursors.append(cursor)
        yield SseMessage(OPENED, "", None)
        for item in self.scripts.pop(0) if self.scripts else []:
            if item == "drop":
                raise httpx.ReadError("connection reset")
            if item == "503":
                raise Unavailable("Service Unavailable (503): electing a leader", 0.01)
            if item == "idle":
                yield SseMessage(IDLE, "", None)
                continue
            ev = self.events[int(item) - 1]
            yield SseMessage(ev.type, msgspec.json.encode(ev).decode(), f"c{ev.seq}")

    def request(self, method: str, path: str) -> dict[str, Any]:
        assert (method, path) == ("GET", f"/v1/runs/{RUN}")
        return self.runs.pop(0)

    def history(self, run_id: str, after: str | None) -> Iterator[tuple[str, dict[str, Any]]]:
        start = int(after[1:]) if after else 0
        for ev in self.events[start:]:
            yield f"c{ev.seq}", msgspec.to_builtins(ev)


class Recorder:
    def __init__(self) -> None:
        self.shown: list[int] = []
        self.notes: list[str] = []

    def show(self, before: RunState, after: RunState, event: Event) -> None:
        self.shown.append(event.seq)

    def connection_lost(self, attempt: int, reason: str) -> None:
        self.notes.append(f"lost {reason}")

    def reconnected(self, after_seq: int) -> None:
        self.notes.append(f"back after {after_seq}")

    def notice(self, text: str) -> None:
        self.notes.append(text)


def follow(scripts: list[list[int | str]], n: int = 12) -> tuple[Recorder, ScriptedGateway, Any]:
    events = _events(n)
    gw = ScriptedGateway(events, scripts)
    view = Recorder()
    state = Follower(gw, RUN, view).run()  # type: ignore[arg-type]
    return view, gw, state


def test_redelivered_events_are_not_shown_twice() -> None:
    view, gw, state = follow([[1, 2, 3, 4, 3, 4, 5, 5, 6, 7, 8, 9, 10, 11, 12]])
    assert view.shown == list(range(1, 13))
    assert state.status == "completed" and state.last_seq == 12
    assert gw.cursors == [None] and view.notes == []


def test_a_gap_is_filled_from_the_history_before_going_on() -> None:
    view, _, state = follow([[1, 2, 3, 7, 8, 9, 10, 11, 12]])
    assert view.shown == list(range(1, 13))
    assert state.event_count == 12


def test_a_drop_resumes_from_the_last_shown_cursor() -> None:
    view, gw, _ = follow([[1, 2, 3, "drop"]])
    # The reconnect caught up from the JSON history after c3 (the run had ended meanwhile).
    assert view.shown == list(range(1, 13))
    assert gw.cursors == [None]
    assert view.notes == ["lost ReadError", "back after 3"]


def test_a_503_on_attach_waits_as_told_and_resumes() -> None:
    view, gw, _ = follow([[1, 2, "503"], [3, 4, 5, 6, 7, 8, 9, 10, 11, 12]])
    assert view.shown == list(range(1, 13))
    assert view.notes[0] == "lost Service Unavailable (503): electing a leader"


def test_a_quiet_stalled_run_is_told_once_with_why_and_its_next_try() -> None:
    events = _events(6)
    gw = ScriptedGateway(events, [[1, 2, "idle", "idle", "idle", 3, "idle", 4, 5, 6]])
    stalled = {"reason": "event_store_full", "detail": "…", "retry_at": "2026-01-01T00:00:30Z"}
    running = {"id": RUN, "status": "running"}
    gw.runs = [running | {"stalled": stalled}] * 2 + [running | {"stalled": None}] * 2
    view = Recorder()
    state = Follower(gw, RUN, view).run()  # type: ignore[arg-type]
    assert view.shown == [1, 2, 3, 4, 5, 6] and state.status == "completed"
    assert len(view.notes) == 1, view.notes  # told once, not at every heartbeat
    assert view.notes[0].startswith("running, paused (the event store is full; next try ")
    assert gw.runs == []
