"""A full database is a state, not a loss: PostgreSQL's data folder on a size-limited filesystem
this test mounts (a tmpfs) and fills. `POST /v1/runs` answers 503 problem+json with Retry-After
(not a 500) and leaves nothing a retry with the same Idempotency-Key cannot complete; events
appended while PostgreSQL cannot write stay in the stream (the truth) and are archived once
space is back; then everything goes on by itself, nothing restarted. A PostgreSQL and a
nats-server of its own, and the gateway app in process."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from runloom.contracts.events import StepStarted
from runloom.devkit import database
from runloom.devkit.disk import tmpfs
from runloom.devkit.embedded import NatsServer, PostgresServer, _system_user, free_port
from runloom.devkit.gateway import in_process
from runloom.gateway.store.tenants import create_tenant
from runloom.runtime import bus, db
from runloom.runtime.eventlog import EventLog

DISK = "160m"


@pytest.fixture
def small_pg(tmp_path: Path) -> Iterator[PostgresServer]:
    """A PostgreSQL whose data folder is a tmpfs of `DISK` mounted for this test. Mounting
    needs root (as here and in CI): a machine where it cannot be done fails the test, loudly,
    rather than skipping it."""
    pg = PostgresServer(tmp_path / "pg", free_port())
    home = pg.system_dir or pg.root  # as root, PostgreSQL's own folder under /var/lib/runloom
    owner = _system_user() if pg.system_dir is not None else None
    with tmpfs(
        home,
        DISK,
        uid=owner.pw_uid if owner else None,
        gid=owner.pw_gid if owner else None,
    ):
        try:
            pg.start()
            yield pg
        finally:
            with contextlib.suppress(Exception):
                pg.stop()
    with contextlib.suppress(Exception):
        pg.remove_data()


def fill(folder: Path) -> Path:
    """A file that takes every free byte of `folder`'s filesystem."""
    filler = folder / "filler"
    chunk = b"\0" * (1024 * 1024)
    with open(filler, "wb", buffering=0) as f:
        for _ in range(1024):  # bounded: the tmpfs is far smaller
            try:
                f.write(chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                break
        else:
            raise AssertionError("1 GiB written and still room: nothing filled")
    with contextlib.suppress(OSError):  # the last few bytes, too
        with open(folder / "filler-tail", "wb", buffering=0) as tail:
            while True:
                tail.write(b"\0" * 512)
    return filler


@pytest.fixture
async def world(small_pg: PostgresServer, tmp_path: Path, settings: Any) -> AsyncIterator[Any]:
    nats = NatsServer(tmp_path / "nats", free_port())
    nats.start()
    passwords = database.new_passwords()
    await database.provision(small_pg.url, passwords)
    own = dataclasses.replace(
        settings, nats_url=nats.url, database_url=database.admin_url(small_pg.url)
    )
    nc = await bus.connect(nats.url, "database-full-test")
    pool = await db.create_pool(own.effective_database_url, max_size=4)
    try:
        await bus.provision(nc.jetstream(), own)
        yield own, nc.jetstream(), pool
    finally:
        with contextlib.suppress(Exception):
            await pool.close()
        with contextlib.suppress(Exception):
            await nc.close()
        nats.stop()


async def test_a_full_database_answers_503_loses_nothing_and_resumes(
    world: Any, small_pg: PostgresServer
) -> None:
    settings, js, pool = world
    tenant = f"t-{uuid.uuid4().hex[:10]}"
    key = await create_tenant(pool, tenant, "full database")
    async with in_process(settings, key) as (client, _):
        first = await client.post("/v1/runs", json={"question": "Before the disk fills?"})
        assert first.status_code == 201, first.text
        run_id = first.json()["id"]

        counted = REGISTRY.get_sample_value("runloom_database_full_refusals_total") or 0.0
        filler = fill(small_pg.data.parent)
        accepted: list[str] = []
        refused: list[tuple[str, httpx.Response]] = []
        async with asyncio.timeout(240):
            for i in range(400):  # until a write needs room the disk no longer has
                idem = f"full-{i}"
                r = await client.post(
                    "/v1/runs",
                    json={"question": f"While the disk is full, {i}?"},
                    headers={"Idempotency-Key": idem},
                )
                assert r.status_code in (201, 503), r.text
                if r.status_code == 201:
                    accepted.append(r.json()["id"])
                    continue
                refused.append((idem, r))
                break
        assert refused, f"{len(accepted)} runs created on a full disk: nothing refused"
        idem, answer = refused[0]
        assert answer.headers["content-type"] == "application/problem+json"
        assert int(answer.headers["Retry-After"]) >= 1
        assert "The database is full" in answer.json()["detail"], answer.text
        assert REGISTRY.get_sample_value("runloom_database_full_refusals_total") == counted + 1

        # Events appended while PostgreSQL cannot write: the stream keeps them.
        log = EventLog(js, "database-full-test")
        appended = [
            await log.append(run_id, tenant, StepStarted(step_id=f"s{i}")) for i in range(3)
        ]

        # Space is back: nothing restarted, everything goes on.
        filler.unlink()
        (filler.parent / "filler-tail").unlink(missing_ok=True)
        deadline = time.monotonic() + 120
        while True:  # the archive takes the events written meanwhile
            stored = await pool.fetchval(
                "SELECT count(*) FROM run_events WHERE run_id=$1 AND seq = ANY($2::int[])",
                run_id,
                [e.seq for e in appended],
            )
            if stored == len(appended):
                break
            assert time.monotonic() < deadline, f"{stored} of {len(appended)} events archived"
            await asyncio.sleep(0.2)

        # The refused request, retried with its key, completes (one run, not two).
        again = await client.post(
            "/v1/runs",
            json={"question": f"While the disk is full, {len(accepted)}?"},
            headers={"Idempotency-Key": idem},
        )
        assert again.status_code in (200, 201), again.text
        later = await client.post("/v1/runs", json={"question": "And now?"})
        assert later.status_code == 201, later.text
        rows = await pool.fetch("SELECT id FROM runs WHERE tenant_id=$1", tenant)
        expected = {run_id, *accepted, again.json()["id"], later.json()["id"]}
        assert sorted(r["id"] for r in rows) == sorted(expected)
        assert (await client.get(f"/v1/runs/{again.json()['id']}")).status_code == 200
