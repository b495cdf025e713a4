"""The gateway: the only public entry point (HTTP API, SSE, the web console).

The lifespan connects NATS and PostgreSQL, starts the streaming core (`_streaming`), then each
feature's hooks. Each feature lives in its own module under `routes/` exposing `router` and,
optionally, `async def startup(state)` / `async def shutdown(state)` hooks.

Consumes: every run's events (RUN_EVENTS, durable `run-archive`, `gateway.store.archive.consumer`,
served by `_streaming`) into the archive and the runs read model; each followed run's subject
(ordered, one per run per process) for SSE. Publishes: `run.created`, `cancel.requested`,
`clarification.answered` on the run's subject; `cmd.run.start` and `cmd.run.resume` (COMMANDS).
Asks (request/reply): billing for budgets and usage (`billing.budget.*`, `billing.usage.*`), the
orchestrator for the corpus (`corpus.*`), deliverables for jobs no event announced
(`deliverables.run|artifact`), the webhooks service for endpoints and deliveries
(`webhooks.*`). Its tables (schema `gateway`): runs, the event archive, the
deliverables read model, tenants and keys.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from types import ModuleType
from typing import Any

from fastapi import FastAPI
from runloom.contracts import subjects
from runloom.gateway import _streaming, _telemetry, agui, metrics, problems
from runloom.gateway._edge import Edge
from runloom.gateway.routes import (
    clarifications,
    console,
    deliverables,
    documents,
    events,
    health,
    lifecycle,
    runs,
    usage,
    webhooks,
)
from runloom.gateway.state import GatewayState
from runloom.gateway.store import archive
from runloom.runtime import bus, db, release
from runloom.runtime.config import Settings
from runloom.runtime.eventlog import EventLog
from runloom.runtime.management import ManagementServer, nats_check, postgres_check
from runloom.runtime.metrics import consumer_gauges, storage_gauges
from runloom.runtime.telemetry import exporting, replica_suffix
from starlette.middleware.errors import ServerErrorMiddleware

log = logging.getLogger("runloom.gateway")

READ_TIMEOUT_S = 2.0
"""JetStream API timeout of the gateway's event log (its appends keep their own bound)."""

FEATURES: list[ModuleType] = [
    health,
    runs,
    events,
    clarifications,
    documents,
    deliverables,
    usage,
    webhooks,
    console,
    agui,
    lifecycle,
]


class _Gateway(FastAPI):
    """Plain SSE streams (`events.Streams`) are answered ahead of every middleware; with
    export on, just inside the instrumentation's request spans (it wraps what this builds and
    needs Starlette's `ServerErrorMiddleware` outermost)."""

    spans = False

    def build_middleware_stack(self) -> Any:
        stack = super().build_middleware_stack()
        if not self.spans:
            return events.Streams(stack)
        assert isinstance(stack, ServerErrorMiddleware)
        stack.app = events.Streams(stack.app)
        return stack


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        management = ManagementServer(settings.management_host, settings.management_port)
        await management.start()
        try:
            async with _serving(app, management):
                yield
        finally:
            await management.close()

    @contextlib.asynccontextmanager
    async def _serving(app: FastAPI, management: ManagementServer) -> AsyncIterator[None]:
        nc = await bus.connect_as(settings, f"gateway-{replica_suffix()}")
        js = nc.jetstream()
        if settings.migrate_on_start:
            await db.ensure_database(settings.effective_database_url)
        pool = await release.open_pool(settings, max_size=20)
        await release.prepare(js, pool, settings, "gateway")
        state = GatewayState(
            settings=settings,
            nc=nc,
            js=js,
            pool=pool,
            # Reads (replays, tails) give up on a silent server after 2 s, not nats-py's 5:
            # an SSE stream held by one fails sooner and its client resumes elsewhere.
            log=EventLog(nc.jetstream(timeout=READ_TIMEOUT_S), f"gateway/{replica_suffix()}"),
        )
        app.state.runloom = state
        management.add_check("nats", nats_check(nc))
        management.add_check("postgres", postgres_check(pool))
        state.streaming = await _streaming.start(js, pool, state.log)
        for feature in FEATURES:
            hook = getattr(feature, "startup", None)
            if hook is not None:
                await hook(state)
        metrics.STREAMING.hub = state.streaming.hub
        management.add_scrape_hook(metrics.archive_lag(js))
        management.add_scrape_hook(consumer_gauges(js, subjects.RUN_EVENTS_STREAM, archive.DURABLE))
        management.add_scrape_hook(
            storage_gauges(
                js,
                (
                    subjects.RUN_EVENTS_STREAM,
                    subjects.COMMANDS_STREAM,
                    subjects.JOBS_STREAM,
                    subjects.DLQ_STREAM,
                ),
            )
        )
        management.started = True
        try:
            yield
        finally:
            management.started = False
            for feature in reversed(FEATURES):
                hook = getattr(feature, "shutdown", None)
                if hook is not None:
                    with contextlib.suppress(Exception):
                        await hook(state)
            if state.streaming is not None:
                with contextlib.suppress(Exception):
                    await _streaming.stop(state.streaming)
            with contextlib.suppress(Exception):
                await nc.drain()
            with contextlib.suppress(Exception):
                await pool.close()

    app = _Gateway(
        title="Runloom",
        version="0.1.0",
        summary="Runs that plan, research, cite and deliver; every step streamed.",
        lifespan=lifespan,
        # The gateway's request spans are `_telemetry`'s (instrumented when exporting, commands
        # only otherwise) and its HTTP metrics `_edge.Edge`: FastAPI's own telemetry
        # would add a span per request, SSE streams included, wrapping each chunk they send.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    problems.install(app)
    app.add_middleware(Edge, command_spans=not exporting())
    for feature in FEATURES:
        app.include_router(feature.router)
    app.spans = _telemetry.instrument(app)
    return app
