"""A running run on a full event store pauses, visibly, and goes on by itself once space is
back: no `run.failed`, no event lost or out of order. While it is paused, `GET /v1/runs/{id}`
and the run list show it `stalled` (why, and when it is tried again); once it goes on, they no
longer do. A nats-server whose store is a tmpfs this test mounts and fills; billing, the
gateway and an orchestrator replica in process on it."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import nats.js.errors
import pytest
from nats.js import api as js_api
from prometheus_client import REGISTRY
from runloom.contracts import subjects
from runloom.contracts.commands import DriveRun
from runloom.contracts.events import TERMINAL_TYPES
from runloom.devkit.deliverables import eventually
from runloom.devkit.disk import tmpfs
from runloom.devkit.embedded import NatsServer, free_port
from runloom.devkit.gateway import in_process
from runloom.devkit.runs import Driver
from runloom.gateway.store.tenants import create_tenant
from runloom.runtime import bus
from runloom.runtime.service import ServiceContext

from .conftest import running_orchestrator


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 24 MiB tmpfs mounted for this test (root and mount needed: fails loudly otherwise)."""
    with tmpfs(tmp_path / "disk", "24m") as mount:
        yield mount


@pytest.fixture
async def full_world(small_disk: Path, settings: Any, pool: Any) -> AsyncIterator[Any]:
    server = NatsServer(small_disk, free_port(), max_file_store="disk")
    server.start()
    own = dataclasses.replace(settings, nats_url=server.url)
    nc = await bus.connect(server.url, "store-full-run-test")
    js = nc.jetstream()
    stop = asyncio.Event()
    task: asyncio.Task[None] | None = None
    try:
        await bus.provision(js, own)
        from runloom.billing.service import main as billing_main

        ctx = ServiceContext(name="billing", settings=own, nc=nc, js=js, pool=pool, stop=stop)
        task = asyncio.create_task(billing_main(ctx))
        yield own, nc, js
    finally:
        stop.set()
        if task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 10)
        with contextlib.suppress(Exception):
            await nc.close()
        server.stop()


def gauge(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def fill(js: Any) -> None:
    """Store data until JetStream refuses it for want of space."""
    await js.add_stream(js_api.StreamConfig(name="FILLER", subjects=["filler.>"]))
    size = 1024 * 1024
    for _ in range(400):  # smaller and smaller pieces, until not even a small one fits
        try:
            await js.publish("filler.x", b"x" * size, timeout=5)
        except nats.js.errors.ServiceUnavailableError as exc:
            assert exc.err_code in (10023, 10047, 10077), exc
            if size <= 64:
                return
            size //= 4
    raise AssertionError("still room: nothing filled")


async def stalled(client: Any, run_id: str) -> tuple[Any, Any]:
    """What the run and the run list show of the run's pause (`stalled`); the callers poll
    it at 5/s, within the tenant's request rate (20/s)."""
    run = (await client.get(f"/v1/runs/{run_id}")).raise_for_status().json()
    items = (await client.get("/v1/runs")).raise_for_status().json()["items"]
    return run["stalled"], next(r["stalled"] for r in items if r["id"] == run_id)


async def test_a_running_run_pauses_on_a_full_store_and_resumes(
    full_world: Any, pool: Any, seeded_tenant: str, orch_options: Any
) -> None:
    settings, nc, js = full_world
    key = await create_tenant(pool, seeded_tenant, "store full")
    driver = Driver(js, pool, seeded_tenant)
    async with in_process(settings, key) as (client, _):
        run_id = await driver.create(
            "How do Python decorators and context managers work?", deliverables=[]
        )

        async def listed() -> bool:
            return (await client.get(f"/v1/runs/{run_id}")).status_code != 404

        await eventually(listed, 30, "the gateway's read model to have the run", every=0.2)
        assert await stalled(client, run_id) == (None, None)
        # Handed to a replica as the dispatcher does, then the disk fills before it works.
        await bus.publish(
            js,
            subjects.DRIVE_RUN,
            DriveRun(command_id=f"drive-{run_id}", run_id=run_id, tenant_id=seeded_tenant),
            msg_id=f"drive-{run_id}",
        )
        await fill(js)
        filled_at = datetime.now(UTC)
        paused_before = gauge("runloom_runs_driven_total", outcome="store_full")
        async with running_orchestrator(settings, nc, js, pool, orch_options):

            async def paused() -> tuple[Any, Any] | None:
                shown = await stalled(client, run_id)
                return shown if shown[0] is not None else None

            # The replica takes it and pauses: visibly.
            shown = await eventually(paused, 60, "the run to show as stalled", every=0.2)
            assert gauge("runloom_runs_driven_total", outcome="store_full") > paused_before
            assert gauge("runloom_event_store_full") == 1.0
            run_shows, list_shows = shown
            assert run_shows["reason"] == "event_store_full", run_shows
            assert "full" in run_shows["detail"], run_shows
            retry_at = datetime.fromisoformat(run_shows["retry_at"])
            # The next try is at most one pause (30 s and its jitter) after this one.
            assert filled_at < retry_at < datetime.now(UTC) + timedelta(seconds=40), run_shows
            assert list_shows["reason"] == "event_store_full", list_shows
            events = await driver.log.events(run_id)
            assert [e.type for e in events] == ["run.created"]  # nothing half-stored, not failed
            run = (await client.get(f"/v1/runs/{run_id}")).json()
            assert run["status"] != "failed", run

            await js.delete_stream("FILLER")  # space is back
            events = await driver.finished(run_id, timeout=60)
        types = [e.type for e in events]
        assert types[-1] == "run.completed", types
        assert sum(t in TERMINAL_TYPES for t in types) == 1
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        assert gauge("runloom_event_store_full") == 0.0

        async def completed() -> bool:
            return (await client.get(f"/v1/runs/{run_id}")).json()["status"] == "completed"

        await eventually(completed, 30, "the read model to show the run completed", every=0.2)
        assert await stalled(client, run_id) == (None, None)
