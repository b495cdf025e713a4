"""runtime.release: a replica started with RUNLOOM_MIGRATE_ON_START=false waits for the
release (streams and migrations) instead of making it, and says what it waits for."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import asyncpg
import pytest
from runloom.runtime import bus, db, release, roles
from runloom.runtime.config import Settings


async def test_nothing_is_missing_once_provisioned_and_migrated(
    js: Any, pool: Any, settings: Settings
) -> None:
    assert await release.missing(js, pool, settings) == []
    waiting = dataclasses.replace(settings, migrate_on_start=False)
    await asyncio.wait_for(release.prepare(js, pool, waiting, "gateway"), timeout=10)


async def test_a_replica_waits_for_the_release_and_names_what_is_missing(
    servers: Any, settings: Settings, tmp_path: Any
) -> None:
    from runloom.devkit.embedded import NatsServer, free_port

    nats = NatsServer(tmp_path / "nats", free_port())  # a JetStream with no stream yet
    nats.start()
    server = servers.database_url.rsplit("/", 1)[0]
    admin = await asyncpg.connect(f"{server}/postgres")
    await admin.execute('CREATE DATABASE "release_wait"')
    await admin.close()
    nc = await bus.connect(nats.url, "test-release")
    pool = await db.create_pool(f"{server}/release_wait", max_size=2)
    fresh = dataclasses.replace(settings, migrate_on_start=False, nats_url=nats.url)
    try:
        todo = await release.missing(nc.jetstream(), pool, fresh)
        assert "stream RUN_EVENTS" in todo and "migration gateway/0001_core.sql" in todo
        waiting = asyncio.create_task(
            release.wait_for_release(nc.jetstream(), pool, fresh, every_s=0.1)
        )
        await asyncio.sleep(0.5)
        assert not waiting.done(), "a replica must not start before the release"
        await bus.provision(nc.jetstream(), fresh)  # what the release Job does
        async with pool.acquire() as conn:
            await roles.provision(conn, {})  # roles, schemas, migrations: `admin migrate`
        await asyncio.wait_for(waiting, timeout=10)
    finally:
        await pool.close()
        await nc.close()
        nats.stop()


def test_the_flag_is_strict(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNLOOM_MIGRATE_ON_START", "false")
    assert Settings.from_env().migrate_on_start is False
    monkeypatch.setenv("RUNLOOM_MIGRATE_ON_START", "maybe")
    with pytest.raises(ValueError, match="RUNLOOM_MIGRATE_ON_START"):
        Settings.from_env()
