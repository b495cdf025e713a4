"""`python -m bench.cluster [--rounds N]`: the event log on one node vs a 3-node R3 cluster.

Figures (both with `sync_interval: always`, on loopback): appends/s to 1 run (each append waits
for the previous one: the per-run order), appends/s to 100 runs at once, publish -> SSE latency
p50/p99 through a gateway (a paced writer process, 10 clients on 2 runs), and on the cluster the
longest append stall and the longest publish -> SSE delay a client sees while the RUN_EVENTS
leader is SIGKILLed. Authentication is on everywhere (each identity an nkey user) and the
cluster speaks TLS on client connections and routes, as `runloom up --cluster` runs it.
Medians over rounds; the machine is shared, so read them as orders of magnitude.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from runloom.contracts.events import StepStarted
from runloom.contracts.ids import new_id
from runloom.devkit import busauth
from runloom.devkit.cluster import NatsCluster
from runloom.devkit.embedded import NatsServer, free_port
from runloom.runtime import bus
from runloom.runtime.config import Settings
from runloom.runtime.eventlog import EventLog

from bench import _env
from bench._env import platform
from bench._scenarios import Bench

SSE_RATE = 200.0
"""Events/s the paced writer sends for the latency figures (both runs together)."""


async def _appends(url: str, replicas: int, runs: int, per_run: int) -> float:
    nc = await bus.connect(url, "bench-cluster", **_env.client())
    try:
        js = nc.jetstream()
        await bus.provision(js, Settings(nats_url=url, stream_replicas=replicas))
        log = EventLog(js, "bench")
        ids = [new_id("run") for _ in range(runs)]

        async def one(run_id: str) -> None:
            for i in range(per_run):
                await log.append(run_id, "t", StepStarted(step_id=f"s{i}"))

        t0 = time.perf_counter()
        await asyncio.gather(*(one(r) for r in ids))
        return runs * per_run / (time.perf_counter() - t0)
    finally:
        await nc.close()


async def _leader_stall(cluster: NatsCluster) -> float:
    nc = await bus.connect(cluster.urls, "bench-stall", **_env.client())
    try:
        js = nc.jetstream()
        log = EventLog(js, "bench", publish_timeout=1.0)
        run_id = new_id("run")
        await log.append(run_id, "t", StepStarted(step_id="s0"))
        info = await js.stream_info("RUN_EVENTS")
        leader = cluster.node(info.cluster.leader) if info.cluster else cluster.nodes[0]
        worst, killed_at = 0.0, 0.0
        for i in range(200):
            if i == 20:
                leader.kill()
                killed_at = time.perf_counter()
            t0 = time.perf_counter()
            for _attempt in range(60):  # an append that gives up is tried again: the stall
                try:
                    await log.append(run_id, "t", StepStarted(step_id=f"s{i + 1}"))
                    break
                except Exception:
                    await asyncio.sleep(0.1)
            if killed_at:
                worst = max(worst, time.perf_counter() - t0)
            if killed_at and time.perf_counter() - killed_at > 6:
                break
        leader.start()
        return worst
    finally:
        await nc.close()


def _use(home: Path, ca: str) -> None:
    """The bench's clients connect as admin from `home`, verifying TLS with `ca` (if any)."""
    os.environ["RUNLOOM_NATS_CREDENTIALS"] = str(busauth.credential(home, "admin"))
    os.environ["RUNLOOM_NATS_CA"] = ca


async def _sse_latency(
    url: str, replicas: int, home: Path, ca: str, kill: NatsCluster | None = None
) -> tuple[float, float, float]:
    """(p50, p99, worst) publish -> SSE delay in ms, through a gateway; with `kill`, the
    RUN_EVENTS leader of that cluster is SIGKILLed 2 s into the writing (and restarted)."""
    extra = {"RUNLOOM_STREAM_REPLICAS": str(replicas)}
    _use(home, ca)
    async with (
        platform(nats_url=url, extra_env=extra, nats_home=home, nats_ca=ca) as env,
        Bench(env) as b,
    ):
        run_ids = await b.runs(2)
        latencies: list[float] = []
        streams = await b.connect(run_ids, 5, latencies)
        writer = asyncio.create_task(b._writer("runloom", SSE_RATE, 8.0, run_ids))
        if kill is not None:
            await asyncio.sleep(2.0)
            info = await b.js.stream_info("RUN_EVENTS")
            leader = kill.node(info.cluster.leader) if info.cluster else kill.nodes[0]
            leader.kill()
        await writer
        await b.until(lambda: len(latencies) >= int(SSE_RATE * 8.0) * 5 * 0.99, 60)
        for s in streams:
            s.close()
        if kill is not None:
            await asyncio.to_thread(leader.start)
            await asyncio.to_thread(kill.wait_healthy, 60.0)
    ordered = sorted(latencies)
    return (
        ordered[len(ordered) // 2],
        ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
        ordered[-1],
    )


async def one_round() -> dict[str, float]:
    root = Path(tempfile.mkdtemp(prefix="runloom-bench-cluster-"))
    single = NatsServer(root / "single", free_port(), authorization=busauth.prepare(root))
    ports = [(free_port(), free_port(), free_port()) for _ in range(3)]
    cluster = NatsCluster(root / "cluster", ["127.0.0.1"] * 3, ports, home=root, tls=True)
    try:
        single.start()
        cluster.start()
        _use(root, "")
        figures = {
            "single: appends/s, 1 run": await _appends(single.url, 1, 1, 300),
            "single: appends/s, 100 runs": await _appends(single.url, 1, 100, 10),
        }
        _use(root, cluster.ca)
        figures |= {
            "cluster R3: appends/s, 1 run": await _appends(cluster.urls, 3, 1, 300),
            "cluster R3: appends/s, 100 runs": await _appends(cluster.urls, 3, 100, 10),
            "cluster R3: longest append stall, leader SIGKILLed (s)": await _leader_stall(cluster),
        }
        p50, p99, _ = await _sse_latency(single.url, 1, root, "")
        figures["single: publish -> SSE p50 (ms)"] = p50
        figures["single: publish -> SSE p99 (ms)"] = p99
        p50, p99, _ = await _sse_latency(cluster.urls, 3, root, cluster.ca)
        figures["cluster R3: publish -> SSE p50 (ms)"] = p50
        figures["cluster R3: publish -> SSE p99 (ms)"] = p99
        *_, worst = await _sse_latency(cluster.urls, 3, root, cluster.ca, kill=cluster)
        figures["cluster R3: longest publish -> SSE, leader SIGKILLed (s)"] = worst / 1000
        return figures
    finally:
        single.stop()
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


async def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rounds = [await one_round() for _ in range(args.rounds)]
    print(f"{'figure':<58} {'median':>10}  (rounds: {args.rounds})")
    for name in rounds[0]:
        print(f"{name:<58} {statistics.median(r[name] for r in rounds):>10.1f}")


if __name__ == "__main__":
    asyncio.run(main())
