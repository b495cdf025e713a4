"""The event log on a 3-node cluster with R3 streams: a replicated stream's leader answers a lost
race with another error code than a single server (10164, not 10071); writers must still retry."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from runloom.contracts.events import RunCreated, StepStarted
from runloom.contracts.ids import new_id, ulid
from runloom.devkit.cluster import NatsCluster
from runloom.runtime.eventlog import EventLog, StoreUnavailable


async def test_concurrent_writers_on_r3_keep_seq_dense_and_unique(cluster_js: Any) -> None:
    run_id = new_id("run")
    logs = [EventLog(cluster_js, f"w{i}") for i in range(4)]
    await logs[0].append(run_id, "t1", RunCreated(question="q"))

    async def write(log: EventLog) -> None:
        for i in range(8):
            await log.append(run_id, "t1", StepStarted(step_id=f"{log.producer}-{i}"))

    await asyncio.wait_for(asyncio.gather(*(write(lg) for lg in logs)), timeout=60)
    events = await logs[0].events(run_id)
    assert [e.seq for e in events] == list(range(1, 34))
    assert len({e.id for e in events}) == 33


async def test_appends_go_on_while_the_stream_leader_dies(
    nats_cluster: NatsCluster, cluster_js: Any
) -> None:
    log = EventLog(cluster_js, "w", publish_timeout=1.0)
    run_id = new_id("run")
    await log.append(run_id, "t1", RunCreated(question="q"))
    info = await cluster_js.stream_info("RUN_EVENTS")
    leader = nats_cluster.node(info.cluster.leader)
    leader.kill()
    try:
        for i in range(20):
            await asyncio.wait_for(log.append(run_id, "t1", StepStarted(step_id=f"s{i}")), 60)
    finally:
        await asyncio.to_thread(leader.start)
        await asyncio.to_thread(nats_cluster.wait_healthy, 60.0)
    events = await log.events(run_id)
    assert [e.seq for e in events] == list(range(1, 22))
    assert len({e.id for e in events}) == 21


async def test_without_a_majority_an_append_fails_clearly_and_its_retry_lands_once(
    nats_cluster: NatsCluster, cluster_js: Any
) -> None:
    log = EventLog(cluster_js, "w", publish_timeout=0.5, max_retries=4)
    run_id = new_id("run")
    await log.append(run_id, "t1", RunCreated(question="q"))
    info = await cluster_js.stream_info("RUN_EVENTS")
    leader = nats_cluster.node(info.cluster.leader)
    lost = [leader, next(n for n in nats_cluster.nodes if n is not leader)]
    for node in lost:
        node.kill()
    event_id = ulid()
    patient = EventLog(cluster_js, "w", publish_timeout=1.0)
    retry = None
    try:
        with pytest.raises(StoreUnavailable, match="majority"):
            await log.append(run_id, "t1", StepStarted(step_id="s"), event_id=event_id)
        # The retry starts while the majority is still lost: it looks for the event first, is
        # answered with timeouts (and, as the nodes come back, 503s), and waits them out.
        retry = asyncio.create_task(
            patient.append(
                run_id, "t1", StepStarted(step_id="s"), event_id=event_id, check_existing=True
            )
        )
    finally:
        for node in lost:
            await asyncio.to_thread(node.start)
        await asyncio.to_thread(nats_cluster.wait_healthy, 60.0)
    assert retry is not None
    await asyncio.wait_for(retry, 60)
    events = await patient.events(run_id)
    assert [e.seq for e in events] == [1, 2]
    assert events[1].id == event_id
