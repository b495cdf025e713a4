"""The CLI's live view of a queued run: `queued (position N, why)`, then on as it starts."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import Any

from runloom.contracts.events import (
    Event,
    RunCreated,
    RunQueued,
    RunStarted,
    data_of,
    type_of,
)
from runloom.runtime.runstate import RunState, fold

from runloom.cli._view import TerminalView


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
