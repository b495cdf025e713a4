"""The CLI's live view of a queued run: `queued (position N, why)`, then on as it starts."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from typing import Any

from runloom.contracts.events import (
    Event,
    RunCreated,
    RunQueued,
    RunStarted,
    data_of,
    type_of,
)
from runloom.contracts.types import rfc3339
from runloom.runtime.runstate import RunState, fold

from runloom.cli._view import TerminalView, status_text


def _events(*payloads: Any) -> list[Event]:
    return [
        Event(
            id=f"e{i}",
            run_id="run_1",
            tenant_id="t1",
            seq=i,
            type=type_of(p),
            time=datetime(2026, 1, 1, tzinfo=UTC),
            producer="test",
            data=data_of(p),
        )
        for i, p in enumerate(payloads, start=1)
    ]


def test_the_cli_says_where_a_queued_run_waits_and_why() -> None:
    out = io.StringIO()
    view = TerminalView(out, io.StringIO())
    state = RunState()
    for ev in _events(
        RunCreated(question="What is a token bucket?"),
        RunQueued(position=7, reason="tenant_concurrency", running=2, limit=2),
        RunQueued(position=3, reason="platform_busy", running=1, limit=2),
        RunStarted(worker="orchestrator/1"),
    ):
        after = fold([ev], state)
        view.show(state, after, ev)
        state = after
    lines = out.getvalue().splitlines()
    assert (
        "  ⧗ queued (position 7, your runs already working fill your share; 2 of 2 running)"
        in lines
    )
    assert "  ⧗ queued (position 3, the platform is busy; 1 of 2 running)" in lines
    assert state.status == "running" and state.queued is None


def test_the_run_list_says_a_stalled_run_is_paused_why_and_until_when() -> None:
    retry = datetime.now(UTC) + timedelta(seconds=20)
    run = {
        "status": "running",
        "stalled": {"reason": "event_store_full", "detail": "…", "retry_at": rfc3339(retry)},
    }
    shown = status_text(run)
    assert shown.startswith("running, paused (the event store is full; next try "), shown
    assert retry.astimezone().strftime("%H:%M:%S") in shown
    assert status_text({"status": "running", "stalled": None}) == "running"
