"""Faults under load on a 3-node cluster (nodes in network namespaces), judged by the checker.

Each fault runs under the same load (runs streaming to SSE clients that drop and resume, plus
concurrent writers appending with acks) and must end with: 0 acknowledged events lost, 0
duplicates / reorders / holes at any reader, exactly one terminal event per run, ledger = usage.
`make test` runs the faults marked `quick`; `make chaos` (RUNLOOM_CHAOS=1) runs them all and
prints the table (`RUNLOOM_CHAOS_REPORT` collects the rows).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from runloom.devkit import netns
from runloom.devkit.chaos import ClusterPlatform, run_fault
from runloom.devkit.supervisor import wait_http

FULL = os.environ.get("RUNLOOM_CHAOS") == "1"
Fault = Callable[[ClusterPlatform], Awaitable[None]]

pytestmark = [
    pytest.mark.skipif(netns.available() is not None, reason=str(netns.available())),
    pytest.mark.timeout(420),
]


@pytest.fixture(scope="module")
async def plat() -> AsyncIterator[ClusterPlatform]:
    root = Path(tempfile.mkdtemp(prefix="runloom-chaos-", dir=os.environ.get("RUNLOOM_TEST_TMP")))
    # The quick subset (make test) runs no deliverables and one orchestrator and billing.
    quick = {"orchestrator": 1, "billing": 1, "deliverables": 0}
    p = ClusterPlatform(root, replicas=None if FULL else quick)
    try:
        await p.start()
        yield p
    finally:
        await p.close()
        shutil.rmtree(root, ignore_errors=True)


async def _heal(plat: ClusterPlatform) -> None:
    """Every node up and current again before the next fault."""
    assert plat.cluster is not None
    for node in plat.cluster.nodes:
        if not node.running:
            await asyncio.to_thread(node.start)
    await asyncio.to_thread(plat.cluster.wait_healthy, 60.0)
    for proc in plat.procs.values():
        if not proc.running:
            proc.start()
    for url in plat.gateways:
        await asyncio.to_thread(wait_http, f"{url}/readyz", 60.0)


async def leader_sigkill(plat: ClusterPlatform) -> None:
    assert plat.cluster is not None
    node = plat.cluster.nodes[await plat.stream_leader()]
    node.kill()
    await asyncio.sleep(5)
    await asyncio.to_thread(node.start)


async def node_sigstop_10s(plat: ClusterPlatform) -> None:
    assert plat.cluster is not None
    node = plat.cluster.nodes[await plat.stream_leader()]
    node.pause()
    await asyncio.sleep(10)
    node.resume()


async def partition_heal(plat: ClusterPlatform) -> None:
    i = await plat.stream_leader()
    plat.lab.partition(i)
    await asyncio.sleep(10)
    plat.lab.heal(i)


async def majority_loss(plat: ClusterPlatform) -> None:
    """Two of three nodes SIGKILLed for 10 s: the stream has no quorum, so an append fails with
    a clear error (nothing acknowledged is lost); after they return everything resumes."""
    from runloom.contracts.ids import new_id
    from runloom.runtime.eventlog import EventLog, StoreUnavailable

    assert plat.cluster is not None
    leader = await plat.stream_leader()
    lost = [plat.cluster.nodes[leader], plat.cluster.nodes[(leader + 1) % 3]]
    began = asyncio.get_running_loop().time()
    for node in lost:
        node.kill()
    try:
        nc = await plat.connect("chaos-probe", "orchestrator")
        try:
            probe = EventLog(nc.jetstream(), "chaos-probe", max_retries=4, publish_timeout=1.0)
            with pytest.raises(StoreUnavailable, match="majority"):
                await probe.append(new_id("run"), plat.tenant, type="step.progress", data={})
        finally:
            await nc.close()
        await asyncio.sleep(max(0.0, 10.0 - (asyncio.get_running_loop().time() - began)))
    finally:
        for node in lost:
            await asyncio.to_thread(node.start)


async def rolling_restart(plat: ClusterPlatform) -> None:
    assert plat.cluster is not None
    for node in plat.cluster.nodes:
        await asyncio.to_thread(node.lame_duck)
        await asyncio.to_thread(node.start)
        await asyncio.to_thread(plat.cluster.wait_healthy, 60.0, [node])


async def service_replicas_sigkill(plat: ClusterPlatform) -> None:
    killed = [plat.procs[f"{s}-1"] for s in ("gateway", "orchestrator", "deliverables", "billing")]
    for proc in killed:
        proc.kill()
    await asyncio.sleep(5)
    for proc in killed:
        proc.start()
    await asyncio.to_thread(wait_http, f"{plat.gateways[0]}/readyz", 60.0, killed[0])


async def postgres_immediate_stop(plat: ClusterPlatform) -> None:
    await asyncio.to_thread(plat.pg_stop_immediate)
    await asyncio.sleep(3)
    await asyncio.to_thread(plat.postgres.start)


async def proxy_latency_and_resets(plat: ClusterPlatform) -> None:
    for proxy in plat.proxies:
        proxy.delay_s = 0.05
    await asyncio.sleep(4)
    for proxy in plat.proxies:
        proxy.delay_s = 0.0
    for _ in range(3):
        for proxy in plat.proxies:
            proxy.reset()
        await asyncio.sleep(1.5)
    plat.proxies[0].half_open = True
    await asyncio.sleep(4)
    plat.proxies[0].half_open = False


FAULTS: list[tuple[str, Fault, bool]] = [
    ("SIGKILL stream leader", leader_sigkill, True),
    ("partition leader 10 s, heal", partition_heal, False),
    ("SIGSTOP leader 10 s", node_sigstop_10s, False),
    ("SIGKILL one replica of each service", service_replicas_sigkill, False),
    ("proxy latency, resets, half-open", proxy_latency_and_resets, False),
    ("PostgreSQL stop -m immediate", postgres_immediate_stop, False),
    ("rolling restart, lame duck", rolling_restart, False),
    ("majority (2 of 3 nodes) lost 10 s", majority_loss, False),
]


@pytest.mark.parametrize(
    "name,fault",
    [
        pytest.param(
            n,
            f,
            marks=[] if quick else pytest.mark.make_target("chaos", env="RUNLOOM_CHAOS"),
            id=n.split(",")[0].replace(" ", "-"),
        )
        for n, f, quick in FAULTS
    ],
)
async def test_fault_under_load(plat: ClusterPlatform, name: str, fault: Fault) -> None:
    outcome = await run_fault(plat, name, fault, runs=3 if FULL else 2)
    await _heal(plat)
    row = outcome.row()
    report = os.environ.get("RUNLOOM_CHAOS_REPORT")
    if report:
        with Path(report).open("a") as out:  # noqa: ASYNC230 (one short line)
            out.write(json.dumps(row) + "\n")
    print(json.dumps(row))
    assert outcome.verdict.ok, (row, plat.logs()[-6000:])
    assert outcome.server_errors == 0, row
    # The stream and the archive hold every event (verdict.ok): a reset frame telling a client
    # that part of its run is gone would be false.
    assert outcome.resets == 0, row
    assert outcome.runs_completed == outcome.runs, row
    assert outcome.acked > 0, row
