"""A private platform for the benchmarks: nats-server, PostgreSQL and one gateway process."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from runloom.devkit import busauth, database
from runloom.devkit.embedded import NatsServer, PostgresServer, free_port
from runloom.devkit.supervisor import ServiceProcess, wait_http
from runloom.runtime import bus, db
from runloom.runtime.config import Settings


def client() -> dict[str, str]:
    """The bench's own NATS clients (writers, readers, probes) connect as `admin`, through the
    credential and CA `platform` put in this process's environment (inherited by the writer
    processes): paths, not secrets."""
    return {
        "credentials": os.environ.get("RUNLOOM_NATS_CREDENTIALS", ""),
        "ca": os.environ.get("RUNLOOM_NATS_CA", ""),
    }


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
    sync_interval: str = "always",
    extra_env: dict[str, str] | None = None,
    *,
    nats_url: str | None = None,
    nats_home: Path | None = None,
    nats_ca: str = "",
) -> AsyncIterator[Env]:
    """`nats_url`: servers already running (e.g. a cluster; its streams' replicas through
    RUNLOOM_STREAM_REPLICAS in `extra_env`) instead of a private nats-server, with the
    identities under `nats_home` (`busauth.secrets_dir`) and TLS verified with `nats_ca`.
    Authentication is on, as in production: the gateway connects as itself."""
    root = Path(tempfile.mkdtemp(prefix="runloom-bench-"))
    home = nats_home or root / "home"
    authorization = busauth.prepare(home)
    nats = (
        None
        if nats_url
        else NatsServer(
            root / "nats", free_port(), sync_interval=sync_interval, authorization=authorization
        )
    )
    os.environ["RUNLOOM_NATS_CREDENTIALS"] = str(busauth.credential(home, "admin"))
    os.environ["RUNLOOM_NATS_CA"] = nats_ca
    url = nats.url if nats is not None else str(nats_url)
    pg = PostgresServer(root / "pg", free_port())
    gateway: ServiceProcess | None = None
    try:
        if nats is not None:
            nats.start()
        pg.start()
        passwords = database.new_passwords()
        await database.provision(pg.url, passwords)
        admin = database.admin_url(pg.url)
        pool = await db.create_pool(admin, max_size=2)
        key = await database.create_heavy_tenant(pool, "bench", "bench")
        await pool.close()
        port = free_port()
        env = {
            "RUNLOOM_NATS_URL": url,
            "RUNLOOM_NATS_CREDENTIALS": str(busauth.credential(home, "gateway")),
            "RUNLOOM_NATS_CA": nats_ca,
            "RUNLOOM_DATABASE_URL": admin,
            **database.service_env(pg.url, passwords),
            "RUNLOOM_GATEWAY_PORT": str(port),
            "RUNLOOM_HOME": str(root / "home"),
            "RUNLOOM_LOG_LEVEL": "WARNING",
            "RUNLOOM_SSE_QUEUE": "20000",
            "RUNLOOM_MANAGEMENT_PORT": str(free_port()),
            **(extra_env or {}),
        }
        # Streams are the admin's to make (services wait for them).
        nc = await bus.connect(url, "bench-provision", **client())
        try:
            replicas = int(env.get("RUNLOOM_STREAM_REPLICAS", "1"))
            await bus.provision(nc.jetstream(), Settings(nats_url=url, stream_replicas=replicas))
        finally:
            await nc.close()
        gateway = ServiceProcess("gateway", env, root / "logs")
        gateway.start()
        wait_http(f"http://127.0.0.1:{port}/readyz", proc=gateway)
        yield Env(url, admin, gateway, port, key, root)
    finally:
        if gateway is not None:
            gateway.stop(5)
        if nats is not None:
            nats.stop()
        pg.remove_data()
        shutil.rmtree(root, ignore_errors=True)
