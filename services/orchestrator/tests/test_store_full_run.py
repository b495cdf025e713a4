"""A running run on a full event store pauses, visibly, and goes on by itself once space is
back: no `run.failed`, no event lost or out of order. A nats-server whose store is a tmpfs
this test mounts and fills; billing and an orchestrator replica in process on it."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import nats.js.errors
import pytest
from nats.js import api as js_api
from prometheus_client import REGISTRY
from runloom.contracts import subjects
from runloom.contracts.commands import DriveRun
from runloom.contracts.events import TERMINAL_TYPES
from runloom.devkit.disk import tmpfs
from runloom.devkit.embedded import NatsServer, free_port
from runloom.devkit.runs import Driver
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


async def test_a_running_run_pauses_on_a_full_store_and_resumes(
    full_world: Any, pool: Any, seeded_tenant: str, orch_options: Any
) -> None:
    settings, nc, js = full_world
    driver = Driver(js, pool, seeded_tenant)
    run_id = await driver.create(
        "How do Python decorators and context managers work?", deliverables=[]
    )
    # Handed to a replica as the dispatcher does, then the disk fills before it works.
    await bus.publish(
        js,
        subjects.DRIVE_RUN,
        DriveRun(command_id=f"drive-{run_id}", run_id=run_id, tenant_id=seeded_tenant),
        msg_id=f"drive-{run_id}",
    )
    await fill(js)
    paused_before = gauge("runloom_runs_driven_total", outcome="store_full")
    async with running_orchestrator(settings, nc, js, pool, orch_options):
        async with asyncio.timeout(60):  # the replica takes it and pauses: visibly
            while gauge("runloom_runs_driven_total", outcome="store_full") <= paused_before:
                await asyncio.sleep(0.05)
        assert gauge("runloom_event_store_full") == 1.0
        events = await driver.log.events(run_id)
        assert [e.type for e in events] == ["run.created"]  # nothing half-stored, not failed

        await js.delete_stream("FILLER")  # space is back
        deadline = time.monotonic() + 60
        while True:
            events = await driver.log.events(run_id)
            if events and events[-1].type in TERMINAL_TYPES:
                break
            assert time.monotonic() < deadline, [e.type for e in events]
            await asyncio.sleep(0.1)
    types = [e.type for e in events]
    assert types[-1] == "run.completed", types
    assert sum(t in TERMINAL_TYPES for t in types) == 1
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert gauge("runloom_event_store_full") == 0.0
