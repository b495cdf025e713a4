"""Billing benchmark: reservations/s through the full request/reply path, and the latency that
metering adds to each provider call (reserve + commit, p50).

    uv run python services/billing/bench_reserve.py [--reservations 2000] [--concurrency 64]

Starts its own nats-server and PostgreSQL (embedded, in a temporary folder) and one real
billing process (`python -m runloom.billing`), then:

- throughput: `--reservations` ReserveRequests sent with `--concurrency` in flight, against one
  run (every request locks the same run and tenant rows: the worst case), spread over 50
  runs of one tenant, and over 8 tenants (a run each); 3 rounds each, the median reported;
- latency: `--calls` sequential provider calls metered by the orchestrator's Meter: reserve,
  then commit (which also appends `usage.recorded` to the run's event log), p50 and p95.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec
from runloom.billing.accounts import Accounts
from runloom.billing.service import run_budget_from_events
from runloom.billing_client import Meter, load_prices
from runloom.contracts import subjects
from runloom.contracts.commands import ReleaseRequest, ReserveReply, ReserveRequest
from runloom.contracts.events import RunCreated, Usage
from runloom.contracts.ids import new_id
from runloom.devkit import database
from runloom.devkit.embedded import NatsServer, PostgresServer, free_port
from runloom.devkit.supervisor import ServiceProcess
from runloom.runtime import bus, db
from runloom.runtime.config import Settings
from runloom.runtime.eventlog import EventLog


async def _wait_billing(nc: Any, proc: ServiceProcess, timeout: float = 30) -> None:
    probe = msgspec.json.encode(ReleaseRequest(reservation_id="p", tenant_id="p", run_id="p"))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.running:
            raise RuntimeError(f"billing exited:\n{proc.log_tail()}")
        try:
            await nc.request(subjects.BILLING_RELEASE, probe, timeout=0.5)
            return
        except Exception:
            await asyncio.sleep(0.05)
    raise TimeoutError("billing did not answer")


async def _throughput(
    nc: Any, tenant: str | list[str], run_ids: list[str], n: int, concurrency: int
) -> float:
    """Reservations/s; run i % len(run_ids) belongs to tenant i % len(tenants)."""
    tenants = [tenant] if isinstance(tenant, str) else tenant
    sem = asyncio.Semaphore(concurrency)
    refused = 0

    async def one(i: int) -> None:
        nonlocal refused
        req = ReserveRequest(
            reservation_id=new_id("res"),
            tenant_id=tenants[i % len(run_ids) % len(tenants)],
            run_id=run_ids[i % len(run_ids)],
            estimated_usd=0.0001,
            kind="tool",
            tool="corpus_search",
        )
        async with sem:
            msg = await nc.request(subjects.BILLING_RESERVE, msgspec.json.encode(req), timeout=30)
        if not msgspec.json.decode(msg.data, type=ReserveReply).granted:
            refused += 1

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    elapsed = time.perf_counter() - started
    if refused:
        raise RuntimeError(f"{refused} reservations refused: the bench budget is too small")
    return n / elapsed


async def _latency(nc: Any, js: Any, tenant: str, run_id: str, calls: int) -> dict[str, float]:
    meter = Meter(nc, EventLog(js, "bench-orchestrator"))
    reserve_ms: list[float] = []
    total_ms: list[float] = []
    for i in range(calls):
        t0 = time.perf_counter()
        res = await meter.reserve(
            run_id=run_id,
            tenant_id=tenant,
            kind="provider",
            estimated_usd=meter.estimate_provider("offline", "extractive-1", 1500, 600),
            reservation_id=f"{run_id}-{i}",
            provider="offline",
            model="extractive-1",
        )
        t1 = time.perf_counter()
        await meter.commit(
            res, Usage(input_tokens=1500, output_tokens=300), usage_id=f"{run_id}-{i}"
        )
        t2 = time.perf_counter()
        reserve_ms.append((t1 - t0) * 1000)
        total_ms.append((t2 - t0) * 1000)
    q = statistics.quantiles(total_ms, n=20)
    return {
        "reserve_p50_ms": round(statistics.median(reserve_ms), 3),
        "reserve_plus_commit_p50_ms": round(statistics.median(total_ms), 3),
        "reserve_plus_commit_p95_ms": round(q[18], 3),
    }


async def _db_only(pool: Any, js: Any, tenant: str, run_id: str, n: int) -> float:
    """One reserve transaction in this process (no billing process): the floor."""
    accounts = Accounts(pool=pool, prices=load_prices(), run_budget=run_budget_from_events(js))
    ms = []
    for _ in range(n):
        t0 = time.perf_counter()
        await accounts.reserve(
            ReserveRequest(
                reservation_id=new_id("res"),
                tenant_id=tenant,
                run_id=run_id,
                estimated_usd=0.0001,
                kind="tool",
                tool="corpus_search",
            )
        )
        ms.append((time.perf_counter() - t0) * 1000)
    return round(statistics.median(ms), 3)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="runloom-bench-billing-"))
    nats = NatsServer(root / "nats", free_port())
    pg = PostgresServer(root / "postgres", free_port())
    nats.start()
    pg.start()
    passwords = database.new_passwords()
    admin = database.admin_url(pg.url)
    proc = ServiceProcess(
        "billing",
        {
            "RUNLOOM_NATS_URL": nats.url,
            "RUNLOOM_DATABASE_URL": admin,
            **database.service_env(pg.url, passwords),
            "RUNLOOM_HOME": str(root),
            "RUNLOOM_LOG_LEVEL": "WARNING",
        },
        root / "logs",
    )
    nc = None
    pool = None
    try:
        await database.provision(pg.url, passwords)
        pool = await db.create_pool(admin, max_size=2)
        nc = await bus.connect(nats.url, "bench-billing")
        js = nc.jetstream()
        await bus.provision(js, Settings(nats_url=nats.url, database_url=admin))
        proc.start()
        await _wait_billing(nc, proc)

        tenant = "bench"
        log = EventLog(js, "bench")

        async def new_run(owner: str = tenant) -> str:
            """A run as billing learns of it: its run.created, with a budget no bench reaches."""
            run_id = new_id("run")
            await log.append(run_id, owner, RunCreated(question="bench", budget_usd=1e6))
            return run_id

        tenants = [f"bench-{i}" for i in range(8)]

        await _throughput(nc, tenant, [await new_run()], 200, args.concurrency)  # warm up
        one_run = [
            await _throughput(nc, tenant, [await new_run()], args.reservations, args.concurrency)
            for _ in range(3)
        ]
        spread = []
        for _ in range(3):
            runs = [await new_run() for _ in range(50)]
            spread.append(await _throughput(nc, tenant, runs, args.reservations, args.concurrency))

        many = []
        for _ in range(3):
            runs = [await new_run(t) for t in tenants]
            many.append(await _throughput(nc, tenants, runs, args.reservations, args.concurrency))

        run_id = await new_run()
        latency = await _latency(nc, js, tenant, run_id, args.calls)
        latency["db_only_reserve_p50_ms"] = await _db_only(pool, js, tenant, await new_run(), 200)
        return {
            "reservations": args.reservations,
            "concurrency": args.concurrency,
            "one_run_reservations_per_s": [round(x) for x in one_run],
            "one_run_median_per_s": round(statistics.median(one_run)),
            "fifty_runs_reservations_per_s": [round(x) for x in spread],
            "fifty_runs_median_per_s": round(statistics.median(spread)),
            "eight_tenants_reservations_per_s": [round(x) for x in many],
            "eight_tenants_median_per_s": round(statistics.median(many)),
            "metered_calls": args.calls,
            **latency,
        }
    finally:
        proc.stop(timeout=5)
        if nc is not None:
            await nc.close()
        if pool is not None:
            await pool.close()
        nats.stop()
        pg.remove_data()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reservations", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--calls", type=int, default=300)
    result = asyncio.run(main(parser.parse_args()))
    json.dump(result, sys.stdout, indent=2)
    print()
