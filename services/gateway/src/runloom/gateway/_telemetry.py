"""The gateway's request spans: the root of every run's trace.

With export on, the maintained FastAPI instrumentation makes one SERVER span per request (none
per body chunk: an SSE stream writes thousands). With export off, `_edge.Edge` gives each
non-GET request (a command: create a run, cancel, answer) a non-recording span instead, so the
events it appends still carry a trace id; GET requests, SSE streams among them, make none.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI
from opentelemetry import trace
from runloom.contracts.events import Event
from runloom.runtime.eventlog import EventLog
from runloom.runtime.telemetry import context_from_traceparent, exporting, work_span


def instrument(app: FastAPI) -> bool:
    """With export on, the instrumentation's request spans for the app (True); with it off,
    nothing here (False): `_edge.Edge` then gives commands their spans."""
    if exporting():
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.instrument_app(
            app, excluded_urls="healthz,readyz,metrics", exclude_spans=["receive", "send"]
        )
        return True
    return False


@contextlib.asynccontextmanager
async def in_run_trace(
    log: EventLog, run_id: str, name: str, created: Event | None = None
) -> AsyncIterator[None]:
    """What a later request does to a run (cancel it, answer it) continues the run's trace (the
    one its run.created carries), linked to the request's own span: one trace per run."""
    if created is None:
        stored = await log.first(run_id)
        created = stored.event if stored is not None else None
    with work_span(
        name,
        parent=context_from_traceparent(created.trace if created is not None else None),
        links=[trace.get_current_span().get_span_context()],
        attributes={"runloom.run_id": run_id},
    ):
        yield
