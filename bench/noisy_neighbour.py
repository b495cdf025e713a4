"""`python -m bench.noisy_neighbour [--runs-a 500] [--runs-b 3] [--rounds 3]`: benchmark (i),
a noisy neighbour. Tenant A floods the platform with runs; tenant B then asks a few.

Each round starts a private nats-server, PostgreSQL, gateway, billing and one orchestrator
(offline provider; A and B hold the default corpus), three times over:

- **A alone**: A posts its runs; A's completed runs per second (first POST to last end);
- **fair** (`RUNLOOM_DISPATCH_ORDER=fair`, the default): A posts its runs; once A has 80 % of
  them waiting, B posts its runs: B's time from each POST to its `run.started` (median, max),
  A's waiting runs at that moment, and A's completed runs per second;
- **fifo** (the order before fair dispatch): the same.

Printed per round and as medians over the rounds, with the machine's 1-minute load average.
Quotas: A and B get a request rate the flood cannot hit and A a queue that holds its runs;
concurrent runs stay at their default (8, the orchestrator's slots), so A alone fills the
platform and B's runs wait for a slot: `platform_busy`, not A's backlog.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from runloom.corpus.store import seed_default_corpus
from runloom.devkit.supervisor import ServiceProcess, wait_http
from runloom.gateway.store.tenants import create_tenant
from runloom.runtime import db

from bench._env import Env, platform

QUESTION = "How do generators and the yield statement work?"


@dataclass
class Phase:
    a_runs_per_s: float
    b_start_s: list[float]
    a_waiting_when_b_asked: int


async def _tenant(admin: asyncpg.Pool, name: str, runs: int) -> str:
    key = await create_tenant(admin, name, name)
    await seed_default_corpus(admin, name)
    await admin.execute(
        "INSERT INTO tenant_quotas(tenant_id, requests_per_second, burst, queued_runs)"
        " VALUES ($1, 10000, 10000, $2) ON CONFLICT (tenant_id) DO NOTHING",
        name,
        runs + 10,
    )
    return key


async def _post(http: httpx.AsyncClient, key: str, n: int) -> list[tuple[str, float]]:
    """n runs, 16 POSTs in flight; (run id, wall time of the POST)."""
    sem = asyncio.Semaphore(16)

    async def one() -> tuple[str, float]:
        async with sem:
            at = time.time()
            r = await http.post(
                "/v1/runs",
                json={"question": QUESTION, "options": {"deliverables": []}},
                headers={"Authorization": f"Bearer {key}"},
            )
            r.raise_for_status()
            return str(r.json()["id"]), at

    return list(await asyncio.gather(*(one() for _ in range(n))))


async def _wait(admin: asyncpg.Pool, sql: str, *args: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = await admin.fetchval(sql, *args)
        if found:
            return found
        if time.monotonic() > deadline:
            raise TimeoutError(f"not reached within {timeout:.0f} s: {sql}")
        await asyncio.sleep(0.05)


async def _phase(env: Env, admin: asyncpg.Pool, runs_a: int, runs_b: int, with_b: bool) -> Phase:
    tag = f"{int(time.time() * 1000) % 10**8}"
    a_key = await _tenant(admin, f"a{tag}", runs_a)
    b_key = await _tenant(admin, f"b{tag}", runs_b)
    async with httpx.AsyncClient(base_url=env.url, timeout=60) as http:
        started = time.time()
        flood = asyncio.create_task(_post(http, a_key, runs_a))
        b_starts: list[float] = []
        waiting = 0
        if with_b:
            waiting = await _wait(
                admin,
                "SELECT n FROM (SELECT count(*) AS n FROM runs WHERE tenant_id=$1"
                " AND status IN ('created', 'queued')) c WHERE n >= $2",
                f"a{tag}",
                int(runs_a * 0.8),
                timeout=600,
            )
            asked = await _post(http, b_key, runs_b)
            for run_id, at in asked:
                t = await _wait(
                    admin,
                    "SELECT started_at FROM runs WHERE id=$1 AND started_at IS NOT NULL",
                    run_id,
                    timeout=900,
                )
                b_starts.append(_epoch(t) - at)
        await flood
        await _wait(
            admin,
            "SELECT 1 WHERE (SELECT count(*) FROM runs WHERE tenant_id=$1 AND ended_at IS NOT"
            " NULL) >= $2",
            f"a{tag}",
            runs_a,
            timeout=3600,
        )
        last = await admin.fetchval("SELECT max(ended_at) FROM runs WHERE tenant_id=$1", f"a{tag}")
    return Phase(runs_a / max(1e-9, _epoch(last) - started), b_starts, int(waiting))


def _epoch(t: datetime) -> float:
    return t.timestamp()


async def _round(runs_a: int, runs_b: int) -> dict[str, Phase]:
    out: dict[str, Phase] = {}
    for order in ("fair", "fifo"):
        async with platform(extra_env={"RUNLOOM_DISPATCH_ORDER": order}) as env:
            services = []
            for name in ("billing", "orchestrator"):
                env_vars = {**_service_env(env, name), "RUNLOOM_DISPATCH_ORDER": order}
                proc = ServiceProcess(name, env_vars, env.root / "logs")
                proc.start()
                services.append(proc)
            try:
                admin = await db.create_pool(env.database_url, max_size=4)
                try:
                    for proc in services:
                        wait_http(f"{_management(proc)}/readyz", timeout=120, proc=proc)
                    if order == "fair":
                        out["alone"] = await _phase(env, admin, runs_a, runs_b, with_b=False)
                    out[order] = await _phase(env, admin, runs_a, runs_b, with_b=True)
                finally:
                    await admin.close()
            finally:
                for proc in services:
                    proc.stop(5)
    return out


def _service_env(env: Env, name: str) -> dict[str, str]:
    """The gateway's environment for another service, with its own bus identity (the gateway's
    is refused the orchestrator's consumers) and its own management port."""
    from runloom.devkit import busauth
    from runloom.devkit.embedded import free_port

    home = Path(env.gateway.env["RUNLOOM_HOME"])
    return {
        **env.gateway.env,
        "RUNLOOM_NATS_CREDENTIALS": str(busauth.credential(home, name)),
        "RUNLOOM_MANAGEMENT_PORT": str(free_port()),
    }


def _management(proc: ServiceProcess) -> str:
    return f"http://127.0.0.1:{proc.env['RUNLOOM_MANAGEMENT_PORT']}"


def _line(name: str, p: Phase, alone: Phase) -> str:
    b = (
        f"B start median {statistics.median(p.b_start_s):6.2f} s  max {max(p.b_start_s):6.2f} s"
        f"  (A waiting {p.a_waiting_when_b_asked})"
        if p.b_start_s
        else " " * 52
    )
    share = f"{100 * p.a_runs_per_s / alone.a_runs_per_s:5.0f} % of alone" if alone else ""
    return f"  {name:<6} A {p.a_runs_per_s:6.2f} runs/s {share}  {b}"


async def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.noisy_neighbour", description=__doc__)
    parser.add_argument("--runs-a", type=int, default=500)
    parser.add_argument("--runs-b", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rounds: list[dict[str, Phase]] = []
    for i in range(args.rounds):
        got = await _round(args.runs_a, args.runs_b)
        rounds.append(got)
        print(f"round {i + 1} of {args.rounds} (load average {os.getloadavg()[0]:.2f})")
        for name in ("alone", "fair", "fifo"):
            print(_line(name, got[name], got["alone"]), flush=True)
    med = {
        name: Phase(
            statistics.median(r[name].a_runs_per_s for r in rounds),
            [
                statistics.median(statistics.median(r[name].b_start_s) for r in rounds),
                statistics.median(max(r[name].b_start_s) for r in rounds),
            ]
            if rounds[0][name].b_start_s
            else [],
            int(statistics.median(r[name].a_waiting_when_b_asked for r in rounds)),
        )
        for name in ("alone", "fair", "fifo")
    }
    print(f"medians of {args.rounds} rounds (B: median of medians, median of maxima)")
    for name in ("alone", "fair", "fifo"):
        print(_line(name, med[name], med["alone"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
