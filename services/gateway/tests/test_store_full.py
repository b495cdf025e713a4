"""A full event store is a state, not a loss: on a size-limited filesystem this test mounts (a
tmpfs) and fills, and against the stream's own limit (max_bytes), appends are refused with
`StoreFull` at once, `POST /v1/runs` answers 503 problem+json with Retry-After and creates
nothing, what was acknowledged stays, and once space is back everything goes on by itself.
The real nats-server (its store on the tmpfs) and the gateway app in process."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import nats.js.errors
import pytest
from nats.js import api as js_api
from prometheus_client import REGISTRY
from runloom.contracts import subjects
from runloom.contracts.events import RunCreated, StepStarted
from runloom.contracts.ids import new_id
from runloom.devkit.disk import tmpfs
from runloom.devkit.embedded import NatsServer, free_port
from runloom.devkit.gateway import in_process
from runloom.gateway.store.tenants import create_tenant
from runloom.runtime import bus
from runloom.runtime.eventlog import EventLog, StoreFull

DISK = "24m"
CHUNK = 256 * 1024


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 24 MiB tmpfs mounted for this test (root and mount needed: fails loudly otherwise)."""
    with tmpfs(tmp_path / "disk", DISK) as mount:
        yield mount


def refused() -> float:
    labels = {"reason": "store_full"}
    return REGISTRY.get_sample_value("runloom_event_appends_refused_total", labels) or 0.0


@dataclasses.dataclass
class Store:
    """A nats-server of its own and what fills it (`fill`) and frees it (`free`)."""

    server: NatsServer
    settings: Any
    js: Any = None
    fault: str = ""

    async def fill(self) -> None:
        """Store data until JetStream refuses it for want of space."""
        if self.fault == "disk":
            await self.js.add_stream(js_api.StreamConfig(name="FILLER", subjects=["filler.>"]))
            subject, limit = "filler.x", 300
        else:  # the stream's own limit: other runs' events take the room
            subject, limit = subjects.run_events(new_id("run")), 100
        size, stored = CHUNK, 0
        for _ in range(limit):  # smaller and smaller pieces, until not even a small one fits
            try:
                await self.js.publish(subject, b"x" * size, timeout=5)
                stored += size
            except nats.js.errors.ServiceUnavailableError as exc:
                assert exc.err_code in (10023, 10077), exc
                if size <= 64:
                    return
                size //= 4
        raise AssertionError(f"{stored} bytes stored and still room: nothing filled")

    async def free(self) -> None:
        """Space is back: the filler removed (disk), or the limit raised (max_bytes)."""
        if self.fault == "disk":
            await self.js.delete_stream("FILLER")
        else:
            info = await self.js.stream_info(subjects.RUN_EVENTS_STREAM)
            cfg = dataclasses.replace(info.config, max_bytes=64 * 1024 * 1024)
            await self.js.update_stream(cfg)


@pytest.fixture(params=["disk", "max_bytes"])
async def store(request: Any, tmp_path: Path, settings: Any) -> AsyncIterator[Store]:
    fault = request.param
    if fault == "disk":
        # JetStream's limit is computed from the disk, so it refuses before the disk is full.
        root = request.getfixturevalue("small_disk")
        server = NatsServer(root, free_port(), max_file_store="disk")
        own = dataclasses.replace(settings, nats_url=server.url)
    else:
        server = NatsServer(tmp_path / "nats", free_port())
        own = dataclasses.replace(settings, nats_url=server.url, events_max_bytes=2 * 1024**2)
    server.start()
    nc = await bus.connect(server.url, "store-full-test")
    try:
        js = nc.jetstream()
        await bus.provision(js, own)
        yield Store(server, own, js, fault)
    finally:
        with contextlib.suppress(Exception):
            await nc.close()
        server.stop()


@contextlib.asynccontextmanager
async def gateway(settings: Any, pool: Any) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    tenant = f"t-{uuid.uuid4().hex[:10]}"
    key = await create_tenant(pool, tenant, "full store")
    async with in_process(settings, key) as (client, _):
        yield client, tenant


async def test_a_full_store_refuses_loses_nothing_and_resumes(store: Store, pool: Any) -> None:
    log = EventLog(store.js, "full-store-test")
    run_id = new_id("run")
    acked = [await log.append(run_id, "t1", RunCreated(question="q"))]
    acked += [await log.append(run_id, "t1", StepStarted(step_id=f"s{i}")) for i in range(5)]
    before = refused()

    async with gateway(store.settings, pool) as (client, tenant):
        await store.fill()
        if store.fault == "disk":  # JetStream refused before the filesystem itself filled up
            st = os.statvfs(store.server.root)
            assert st.f_bavail * st.f_frsize > 0

        started = time.monotonic()
        with pytest.raises(StoreFull, match="the event store is full"):
            await log.append(run_id, "t1", StepStarted(step_id="s-next"))
        assert time.monotonic() - started < 2.0, "a full store is said at once, not retried"
        assert refused() == before + 1

        answer = await client.post("/v1/runs", json={"question": "Will this be stored?"})
        assert answer.status_code == 503, answer.text
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.headers["Retry-After"] == "30"
        assert "The event store is full" in answer.json()["detail"]
        # Nothing half-created: no run row, no run in the list.
        assert await pool.fetchval("SELECT count(*) FROM runs WHERE tenant_id=$1", tenant) == 0
        assert (await client.get("/v1/runs")).json()["items"] == []

        # What was acknowledged before is all there.
        assert [e.id for e in await log.events(run_id)] == [e.id for e in acked]

        await store.free()
        resumed = await log.append(run_id, "t1", StepStarted(step_id="s-next"))
        assert resumed.seq == len(acked) + 1
        assert [e.seq for e in await log.events(run_id)] == list(range(1, len(acked) + 2))
        created = await client.post("/v1/runs", json={"question": "And now?"})
        assert created.status_code == 201, created.text
