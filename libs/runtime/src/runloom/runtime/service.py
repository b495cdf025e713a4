"""The frame of a worker service: connect, prepare (release.py), run until SIGTERM, drain.

The management port (`runloom.runtime.management`) is up before anything else, so a probe
sees a starting process as alive and not ready; the body calls `ctx.ready()` once its
consumers run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from runloom.runtime import bus, db, release
from runloom.runtime.config import Settings
from runloom.runtime.management import ManagementServer, nats_check, postgres_check
from runloom.runtime.telemetry import replica_suffix

log = logging.getLogger(__name__)


@dataclass
class BusContext:
    """What a service's body is given: its bus connection, its stop event, its management
    port. A service without tables (the lifecycle service) gets this alone (`serve_bus`)."""

    name: str
    settings: Settings
    nc: NATS
    js: JetStreamContext
    stop: asyncio.Event
    replica: str = field(default_factory=replica_suffix)
    management: ManagementServer | None = None

    def ready(self) -> None:
        """The service's consumers run: /readyz may answer 200 (while its checks pass)."""
        if self.management is not None:
            self.management.started = True

    @property
    def producer(self) -> str:
        return f"{self.name}/{self.replica}"


@dataclass
class ServiceContext(BusContext):
    """A service with its own schema: the bus, and a pool connected as its own role."""

    pool: asyncpg.Pool = field(kw_only=True)


Body = Callable[[ServiceContext], Awaitable[None]]
BusBody = Callable[[BusContext], Awaitable[None]]


@contextlib.asynccontextmanager
async def _frame(
    name: str, settings: Settings
) -> AsyncIterator[tuple[BusContext, ManagementServer]]:
    """Signals, the management port, the NATS connection; drained and closed on the way out."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    management = ManagementServer(settings.management_host, settings.management_port)
    await management.start()
    try:
        nc = await bus.connect_as(settings, f"{name}-{replica_suffix()}")
        management.add_check("nats", nats_check(nc))
        js = nc.jetstream()
        ctx = BusContext(
            name=name, settings=settings, nc=nc, js=js, stop=stop, management=management
        )
        try:
            yield ctx, management
        finally:
            management.started = False
            with contextlib.suppress(Exception):
                await nc.drain()
            log.info("%s replica %s stopped", name, ctx.replica)
    finally:
        await management.close()


async def serve(name: str, settings: Settings, body: Body) -> None:
    """Run `body(ctx)` until SIGTERM/SIGINT sets `ctx.stop`; then drain and close."""
    async with _frame(name, settings) as (bus_ctx, management):
        if settings.migrate_on_start:
            await db.ensure_database(settings.effective_database_url)
        pool = await release.open_pool(settings)
        management.add_check("postgres", postgres_check(pool))
        try:
            await release.prepare(bus_ctx.js, pool, settings, name)
            ctx = ServiceContext(**vars(bus_ctx), pool=pool)
            log.info("%s replica %s started", name, ctx.replica)
            await body(ctx)
        finally:
            management.started = False
            with contextlib.suppress(Exception):
                await bus_ctx.nc.drain()  # messages in hand are done with the pool still open
            with contextlib.suppress(Exception):
                await pool.close()


async def serve_bus(name: str, settings: Settings, body: BusBody) -> None:
    """`serve` for a service that holds no table: no database connection at all; it waits
    for the streams the release makes, then runs `body(ctx)` until SIGTERM/SIGINT."""
    async with _frame(name, settings) as (ctx, _management):
        await release.wait_for_streams(ctx.js, settings)
        log.info("%s replica %s started", name, ctx.replica)
        await body(ctx)


def start(name: str, run: Callable[[Settings], Coroutine[Any, Any, None]]) -> None:
    """A service process's entry (`python -m runloom.<name>`): its settings, logging and
    tracing under its name, memory tuned (`process.tune_memory`), then `run(settings)` until it
    stops."""
    from runloom.runtime.logging import setup_logging
    from runloom.runtime.process import tune_memory
    from runloom.runtime.telemetry import setup_tracing

    settings = Settings.from_env()
    setup_logging(name, settings.log_level, settings.log_format)
    setup_tracing(name, settings.otel_exporter)
    tune_memory()
    asyncio.run(run(settings))
