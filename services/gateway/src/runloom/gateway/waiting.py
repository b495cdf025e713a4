"""Runs that wait to start: a cancel ends them at once.

A run queued by the orchestrators (`run.queued`), or not yet queued, has nobody working on it
to hear its `cancel.requested`, so the gateway ends it right after: `run.cancelled` with the
id the orchestrator would give it (`<run>:cancelled`), so that a dispatcher starting the run at
that very moment writes the same event, not a second end. The orchestrators drop the run from
its queue when they next look at it (its log is closed).
"""

from __future__ import annotations

import asyncpg
from runloom.contracts.events import Event, RunCancelled
from runloom.runtime.eventlog import EventLog, RunClosed


def not_started(row: asyncpg.Record) -> bool:
    """The read model says no replica has started the run yet."""
    return row["started_count"] == 0 and row["terminal_type"] is None


async def end_waiting(log: EventLog, tenant_id: str, run_id: str, cancel: Event) -> None:
    try:
        await log.append(
            run_id,
            tenant_id,
            RunCancelled(reason="cancelled on request before it started"),
            event_id=f"{run_id}:cancelled",
            causation_id=cancel.id,
            check_existing=True,
        )
    except RunClosed:
        pass  # it ended meanwhile (its owner heard the cancel first)
