"""The lifecycle service's own parts against the session's nats-server, connected as its
identity: the sweep lease (one holder among replicas), and an erasure that cannot finish
answering why (the job recorded), asked twice at once and run once."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
from runloom.contracts.commands import EraseRunsRequest
from runloom.contracts.ids import new_id
from runloom.lifecycle import metrics
from runloom.lifecycle.eraser import Eraser
from runloom.runtime import erasure

pytestmark = pytest.mark.timeout(60)


async def test_one_replica_holds_the_lease_until_it_lets_go_or_it_runs_out(nats_as: Any) -> None:
    js = (await nats_as("lifecycle")).jetstream()
    name = f"test-{uuid.uuid4().hex[:8]}"
    took = await asyncio.gather(*(erasure.take_lease(js, name, f"r{i}", 60) for i in range(4)))
    assert sum(took) == 1, took
    holder = f"r{took.index(True)}"
    assert await erasure.take_lease(js, name, holder, 60), "its holder renews it"
    assert not await erasure.take_lease(js, name, "other", 60)
    await erasure.release_lease(js, name, holder)
    assert await erasure.take_lease(js, name, "other", 0.3), "given back: the next one takes it"
    deadline = time.monotonic() + 10
    while not await erasure.take_lease(js, name, "third", 60):
        assert time.monotonic() < deadline, "a lease whose holder died never ran out"
        await asyncio.sleep(0.1)
    listed = [j.erasure_id for j in await erasure.unfinished(js, 0)]
    assert not [k for k in listed if k.startswith(erasure.LEASE_PREFIX)], listed


async def test_an_erasure_that_cannot_finish_says_why_and_runs_once(nats_as: Any, js: Any) -> None:
    """No gateway answers the inventory here: the job is recorded, the reply is `unfinished`
    with the reason (the gateway turns it into a 503), and two requests at once share a run."""
    nc = await nats_as("lifecycle")
    eraser = Eraser(nc, nc.jetstream())
    req = EraseRunsRequest(tenant_id=f"t-{uuid.uuid4().hex[:8]}", run_ids=[new_id("run")])
    before = metrics.ERASURES.labels("request", "unfinished")._value.get()
    first, second = await asyncio.gather(eraser.handle(req), eraser.handle(req))
    try:
        assert first == second
        assert first.status == "unfinished" and first.erasure_id == f"run-{req.run_ids[0]}"
        assert "gateway" in first.detail and "run it again" in first.detail, first.detail
        assert metrics.ERASURES.labels("request", "unfinished")._value.get() == before + 1
        record = await erasure.load(js, first.erasure_id)
        assert record is not None and record.status == "running" and record.done == []
        assert not eraser.running
    finally:
        kv = await js.key_value("erasures")
        await kv.purge(first.erasure_id)
