"""PostgreSQL away is a 503, on every path: also on the plain SSE stream, which is answered
ahead of FastAPI's exception handlers (a 60-minute soak saw it answer 500 while PostgreSQL
restarted). A PostgreSQL and a nats-server of its own, the gateway app in process."""

from __future__ import annotations

import contextlib
import dataclasses
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from runloom.devkit import database
from runloom.devkit.embedded import NatsServer, PostgresServer, free_port
from runloom.devkit.gateway import in_process
from runloom.gateway.store.tenants import create_tenant
from runloom.runtime import bus, db


@pytest.fixture
async def world(tmp_path: Path, settings: Any) -> AsyncIterator[Any]:
    pg = PostgresServer(tmp_path / "pg", free_port())
    nats = NatsServer(tmp_path / "nats", free_port())
    pg.start()
    nats.start()
    try:
        await database.provision(pg.url, database.new_passwords())
        own = dataclasses.replace(
            settings, nats_url=nats.url, database_url=database.admin_url(pg.url)
        )
        nc = await bus.connect(nats.url, "database-down-test")
        try:
            await bus.provision(nc.jetstream(), own)
        finally:
            await nc.close()
        yield own, pg
    finally:
        nats.stop()
        with contextlib.suppress(Exception):
            pg.stop()
        with contextlib.suppress(Exception):
            pg.remove_data()


async def test_every_stream_path_answers_503_while_postgresql_is_away(world: Any) -> None:
    settings, pg = world
    pool = await db.create_pool(settings.effective_database_url, max_size=2)
    try:
        key = await create_tenant(pool, f"t-{uuid.uuid4().hex[:10]}", "database away")
    finally:
        await pool.close()
    async with in_process(settings, key) as (client, _):
        created = await client.post("/v1/runs", json={"question": "And if PostgreSQL stops?"})
        assert created.status_code == 201, created.text
        run_id = created.json()["id"]

        pg.stop()
        paths = (
            f"/v1/runs/{run_id}/events",  # the plain stream, ahead of the exception handlers
            f"/v1/runs/{run_id}/events?format=json",
            f"/v1/runs/{run_id}",
        )
        for path in paths:
            r = await client.get(path)
            assert r.status_code == 503, (path, r.status_code, r.text)
            assert r.headers["content-type"] == "application/problem+json", path
            assert int(r.headers["Retry-After"]) >= 1, path
            assert "database did not answer" in r.json()["detail"], (path, r.text)

        pg.start()
        again = await client.get(f"/v1/runs/{run_id}")
        assert again.status_code == 200, again.text
