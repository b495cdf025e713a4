"""A private platform for the benchmarks: nats-server, PostgreSQL and one gateway process."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from runloom.devkit.embedded import NatsServer, PostgresServer, free_port
from runloom.devkit.supervisor import ServiceProcess, wait_http
from runloom.runtime import bus, db


@dataclass
class Env:
    nats_url: str
    database_url: str
    gateway: ServiceProcess
    port: int
    api_key: str
    root: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextlib.asynccontextmanager
async def platform(
    sync_interval: str = "always", extra_env: dict[str, str] | None = None
) -> AsyncIterator[Env]:
    root = Path(tempfile.mkdtemp(prefix="runloom-bench-"))
    nats = NatsServer(root / "nats", free_port(), sync_interval=sync_interval)
    pg = PostgresServer(root / "pg", free_port())
    gateway: ServiceProcess | None = None
    try:
        nats.start()
        pg.start()
        await db.ensure_database(pg.url)
        pool = await db.create_pool(pg.url, max_size=2)
        await db.migrate(pool)
        from runloom.runtime.tenants import create_tenant

        key = await create_tenant(pool, "bench", "bench")
        await pool.close()
        port = free_port()
        env = {
            "RUNLOOM_NATS_URL": nats.url,
            "RUNLOOM_DATABASE_URL": pg.url,
            "RUNLOOM_GATEWAY_PORT": str(port),
            "RUNLOOM_HOME": str(root / "home"),
            "RUNLOOM_LOG_LEVEL": "WARNING",
            "RUNLOOM_SSE_QUEUE": "20000",
            "RUNLOOM_MANAGEMENT_PORT": str(free_port()),
            **(extra_env or {}),
        }
        gateway = ServiceProcess("gateway", env, root / "logs")
        gateway.start()
        wait_http(f"http://127.0.0.1:{port}/readyz", proc=gateway)
        nc = await bus.connect(nats.url, "bench-provision")
        await nc.close()
        yield Env(nats.url, pg.url, gateway, port, key, root)
    finally:
        if gateway is not None:
            gateway.stop(5)
        nats.stop()
        pg.remove_data()
        shutil.rmtree(root, ignore_errors=True)
