"""The frame of a worker service: connect, prepare (release.py), run until SIGTERM, drain."""

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
    nc = await bus.connect(settings.effective_nats_url, f"{name}-{replica_suffix()}")
    js = nc.jetstream()
    if settings.migrate_on_start:
        await db.ensure_database(settings.effective_database_url)
    pool = await db.create_pool(settings.effective_database_url)
    await release.prepare(js, pool, settings)
    ctx = ServiceContext(name=name, settings=settings, nc=nc, js=js, pool=pool, stop=stop)
    log.info("%s replica %s started", name, ctx.replica)
    try:
        await body(ctx)
    finally:
        with contextlib.suppress(Exception):
            await nc.drain()
        with contextlib.suppress(Exception):
            await pool.close()
        log.info("%s replica %s stopped", name, ctx.replica)
