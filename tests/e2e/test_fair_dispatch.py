"""Fair dispatch with real processes: tenants' queues, run.queued, cancel while queued, and a
dispatching replica SIGKILLed while runs wait."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
from runloom.corpus.store import seed_default_corpus
from runloom.devkit.runs import json_events
from runloom.gateway.store.tenants import create_tenant
from runloom.runtime import db

QUESTION = "How do Python decorators and context managers work?"
TERMINAL = {"run.completed", "run.failed", "run.cancelled", "run.budget_stopped"}


async def _post(client: httpx.AsyncClient, url: str, headers: dict[str, str]) -> str:
    r = await client.post(
        f"{url}/v1/runs",
        json={"question": QUESTION, "options": {"deliverables": []}},
        headers=headers,
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def _until(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = await check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        await asyncio.sleep(0.1)


async def _ended(client: httpx.AsyncClient, url: str, h: dict[str, str], run_ids: list[str]) -> Any:
    async def all_ended() -> bool:
        views = [(await client.get(f"{url}/v1/runs/{r}", headers=h)).json() for r in run_ids]
        return all(v["ended_by"] is not None for v in views)

    return await _until(all_ended, 150, "every run ended")


async def _second_tenant(platform: Any) -> dict[str, str]:
    pool = await db.create_pool(platform.settings.effective_database_url, max_size=2)
    try:
        tenant = f"b-{int(time.time() * 1000) % 10**9}"
        key = await create_tenant(pool, tenant, tenant)
        await seed_default_corpus(pool, tenant)
        await pool.execute(
            "INSERT INTO tenant_quotas(tenant_id, concurrent_runs, requests_per_second, burst)"
            " VALUES ($1, 1, 1000, 1000)",
            tenant,
        )
    finally:
        await pool.close()
    return {"Authorization": f"Bearer {key}"}


async def _set(platform: Any, tenant: str, **values: Any) -> None:
    """Set the tenant's quotas (and a request rate the tests' polling stays under)."""
    from runloom.gateway import quotas

    values = {"requests_per_second": 1000.0, "burst": 1000.0, **values}
    pool = await db.create_pool(platform.settings.effective_database_url, max_size=2)
    try:
        await quotas.set_limits(pool, tenant, values)
    finally:
        await pool.close()


@pytest.mark.platform_env(RUNLOOM_ORCH_CONCURRENCY="4", RUNLOOM_OFFLINE_TOKEN_DELAY_S="0.01")
@pytest.mark.platform_services("gateway", "billing", "orchestrator")
async def test_a_flooding_tenant_waits_in_its_queue_and_another_starts_at_once(
    platform, corpus
) -> None:
    await _set(platform, corpus, concurrent_runs=1)  # A: one run at a time
    a = platform.headers()
    b = await _second_tenant(platform)
    async with httpx.AsyncClient(timeout=30) as client:
        floods = [await _post(client, platform.url, a) for _ in range(4)]
        asked = time.monotonic()
        mine = await _post(client, platform.url, b)

        async def b_started() -> bool:
            events = await json_events(client, platform.url, mine, b)
            return any(e["type"] == "run.started" for e in events)

        await _until(b_started, 20, "B's run started")
        b_wait = time.monotonic() - asked

        # A's last run waits behind its own: queued, position and why, in the API and events.
        last = floods[-1]

        async def queued() -> Any:
            events = await json_events(client, platform.url, last, a)
            said = [e for e in events if e["type"] == "run.queued"]
            return said if said else None

        said = await _until(queued, 20, "run.queued of A's last run")
        assert said[0]["data"]["reason"] == "tenant_concurrency", said
        assert 1 <= said[0]["data"]["position"] <= 3 and said[0]["data"]["limit"] == 1

        async def listed_queued() -> bool:  # the runs list (read model) says so too
            view = (await client.get(f"{platform.url}/v1/runs/{last}", headers=a)).json()
            return bool(view["status"] == "queued")

        await _until(listed_queued, 10, "A's last run listed as queued")

        # Cancelling it ends it at once, before it ever starts.
        r = await client.post(f"{platform.url}/v1/runs/{last}/cancel", headers=a)
        assert r.status_code == 202, r.text
        events = await json_events(client, platform.url, last, a)
        types = [e["type"] for e in events]
        assert types[-1] == "run.cancelled" and "run.started" not in types, types

        await _ended(client, platform.url, a, floods)
        await _ended(client, platform.url, b, [mine])
        for run_id in floods[:-1]:
            events = await json_events(client, platform.url, run_id, a)
            assert [e["type"] for e in events][-1] == "run.completed"
    # B did not wait for A's backlog (each run takes seconds; A had four).
    assert b_wait < 10.0, b_wait


@pytest.mark.platform_env(
    RUNLOOM_ORCH_CONCURRENCY="2",
    RUNLOOM_OFFLINE_TOKEN_DELAY_S="0.005",
    RUNLOOM_REPORT_DELTA_INTERVAL_S="0.25",
)
@pytest.mark.platform_services("gateway", "billing", "orchestrator")
async def test_a_replica_killed_mid_dispatch_loses_no_run_and_starts_none_twice(
    platform, corpus
) -> None:
    platform.add("orchestrator")
    platform.wait_all_ready()
    await _set(platform, corpus, concurrent_runs=20)
    h = platform.headers()
    async with httpx.AsyncClient(timeout=30) as client:
        runs = [await _post(client, platform.url, h) for _ in range(10)]

        async def some_started_some_waiting() -> bool:
            views = [
                (await client.get(f"{platform.url}/v1/runs/{r}", headers=h)).json() for r in runs
            ]
            started = sum(v["started_at"] is not None for v in views)
            return 2 <= started < len(runs)

        await _until(some_started_some_waiting, 60, "runs started while others wait")
        platform["orchestrator-1"].kill()  # SIGKILL while it dispatches and drives
        await _ended(client, platform.url, h, runs)
        histories = {r: await json_events(client, platform.url, r, h) for r in runs}
    taken_over = 0
    for run_id, events in histories.items():
        types = [e["type"] for e in events]
        assert types[-1] == "run.completed", (run_id, types)
        assert sum(t in TERMINAL for t in types) == 1
        attempts = [e["data"].get("attempt", 1) for e in events if e["type"] == "run.started"]
        # Started once; a second start only as the takeover of a run the killed replica was
        # working on (attempt 2, by the other replica), never twice by the dispatcher.
        assert attempts in ([1], [1, 2]), (run_id, attempts)
        if attempts == [1, 2]:
            workers = [e["data"]["worker"] for e in events if e["type"] == "run.started"]
            assert "orchestrator-1" in workers[0] and workers[0] != workers[1]
            taken_over += 1
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert taken_over <= 2  # at most the killed replica's slots
