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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import asyncpg
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from runloom.runtime import bus, db, release
from runloom.runtime.config import Settings
from runloom.runtime.management import ManagementServer, nats_check, postgres_check
from runloom.runtime.telemetry import replica_suffix

log = logging.getLogger(__name__)


@dataclass
class ServiceContext:
    name: str
    settings: Settings
    nc: NATS
    js: JetStreamContext
    pool: asyncpg.Pool
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


Body = Callable[[ServiceContext], Awaitable[None]]


async def serve(name: str, settings: Settings, body: Body) -> None:
    """Run `body(ctx)` until SIGTERM/SIGINT sets `ctx.stop`; then drain and close."""
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
        if settings.migrate_on_start:
            await db.ensure_database(settings.effective_database_url)
        pool = await release.open_pool(settings)
        management.add_check("postgres", postgres_check(pool))
        await release.prepare(js, pool, settings, name)
        ctx = ServiceContext(
            name=name,
            settings=settings,
            nc=nc,
            js=js,
            pool=pool,
            stop=stop,
            management=management,
        )
        log.info("%s replica %s started", name, ctx.replica)
        try:
            await body(ctx)
        finally:
            management.started = False
            with contextlib.suppress(Exception):
                await nc.drain()
            with contextlib.suppress(Exception):
                await pool.close()
            log.info("%s replica %s stopped", name, ctx.replica)
    finally:
        await management.close()
