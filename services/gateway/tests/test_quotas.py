"""Quotas per tenant, through two real gateway replicas sharing one database."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from runloom.devkit.embedded import free_port
from runloom.devkit.supervisor import ServiceProcess, wait_http
from runloom.gateway import quotas
from runloom.gateway.store.tenants import create_tenant, hash_key

pytestmark = pytest.mark.platform_services("gateway")

POLICY = re.compile(r'^"(\w+)";q=(\d+)(;w=\d+)?$')
CURRENT = re.compile(r'^"(\w+)";r=(\d+);t=(\d+)$')


@pytest.fixture
async def second_gateway(platform: Any) -> AsyncIterator[str]:
    """A second gateway replica (its own HTTP and management ports), same NATS and database."""
    port, management = free_port(), free_port()
    env = {
        **platform.env_for("gateway"),
        "RUNLOOM_GATEWAY_PORT": str(port),
        "RUNLOOM_MANAGEMENT_PORT": str(management),
    }
    proc = ServiceProcess("gateway", env, platform.root / "logs", replica="2")
    proc.start()
    try:
        await asyncio.to_thread(wait_http, f"http://127.0.0.1:{port}/readyz", 30.0, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.stop(timeout=5)


async def _tenant(pool: Any, platform: Any) -> str:
    tenant: str = await pool.fetchval(
        "SELECT tenant_id FROM api_keys WHERE key_hash=$1", hash_key(platform.api_key)
    )
    return tenant


async def _new_tenant(pool: Any, **limits: float) -> tuple[str, dict[str, str]]:
    """A tenant of its own (nothing else of the session's counts against it), its quotas set;
    the headers that authenticate as it."""
    tenant = f"q-{uuid.uuid4().hex[:10]}"
    key = await create_tenant(pool, tenant, tenant)
    await quotas.set_limits(pool, tenant, dict(limits))
    return tenant, {"Authorization": f"Bearer {key}"}


def _assert_429(r: httpx.Response, quota: str) -> None:
    assert r.status_code == 429, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["quota"] == quota and body["retry_after_s"] >= 1
    assert f"Retry in {body['retry_after_s']} s" in body["detail"]
    assert int(r.headers["Retry-After"]) == body["retry_after_s"]
    policy, current = (
        POLICY.match(r.headers["RateLimit-Policy"]),
        CURRENT.match(r.headers["RateLimit"]),
    )
    assert policy and policy[1] == quota and int(policy[2]) == body["limit"], r.headers
    assert current and current[1] == quota and int(current[3]) == body["retry_after_s"], r.headers


async def test_the_request_rate_is_one_bucket_for_every_replica(platform, second_gateway, pool):
    tenant = await _tenant(pool, platform)
    await quotas.set_limits(pool, tenant, {"requests_per_second": 0.01, "burst": 12})
    urls = [platform.url, second_gateway]
    async with httpx.AsyncClient(headers=platform.headers(), timeout=10) as c:
        answers = await asyncio.gather(
            *(c.get(f"{urls[i % 2]}/v1/runs", params={"limit": "1"}) for i in range(40))
        )
    ok = [r for r in answers if r.status_code == 200]
    refused = [r for r in answers if r.status_code != 200]
    # 12 tokens and next to no refill: 12 answers in all, whichever replica took them.
    assert len(ok) == 12, [r.status_code for r in answers]
    for r in refused:
        _assert_429(r, "requests")
        assert int(r.headers["Retry-After"]) >= 60  # a token per 100 s: said as such
    counted = await _scrape(platform, tenant)
    assert counted >= 1


async def _scrape(platform: Any, tenant: str) -> float:
    async with httpx.AsyncClient(timeout=10) as c:
        text = (await c.get(f"{platform.management['gateway-1']}/metrics")).text
    found = re.search(
        rf'runloom_quota_refused_total\{{quota="requests",tenant="{re.escape(tenant)}"\}} (\S+)',
        text,
    )
    assert found, "no 429 counted for the tenant in /metrics"
    return float(found[1])


async def test_a_full_queue_refuses_a_new_run_and_stores_nothing(platform, pool):
    tenant = await _tenant(pool, platform)
    await quotas.set_limits(pool, tenant, {"queued_runs": 2})
    async with httpx.AsyncClient(base_url=platform.url, headers=platform.headers()) as c:
        for i in range(2):  # no orchestrator: they stay waiting to start
            assert (await c.post("/v1/runs", json={"question": f"q{i}"})).status_code == 201
        r = await c.post(
            "/v1/runs", json={"question": "one more"}, headers={"Idempotency-Key": "k3"}
        )
        _assert_429(r, "queued_runs")
        assert "nothing was stored" in r.json()["detail"]
    assert await pool.fetchval("SELECT count(*) FROM runs WHERE tenant_id=$1", tenant) == 2
    assert not await pool.fetchval(
        "SELECT 1 FROM idempotency_keys WHERE tenant_id=$1 AND key='k3'", tenant
    )
    assert not await pool.fetchval(
        "SELECT 1 FROM run_events WHERE tenant_id=$1"
        " AND convert_from(raw, 'UTF8') LIKE '%one more%'",
        tenant,
    )


async def test_open_streams_are_counted_across_replicas(platform, second_gateway, pool):
    tenant = await _tenant(pool, platform)
    await quotas.set_limits(pool, tenant, {"sse_streams": 1})
    async with httpx.AsyncClient(headers=platform.headers(), timeout=10) as c:
        run = (await c.post(f"{platform.url}/v1/runs", json={"question": "stay"})).json()
        path = f"/v1/runs/{run['id']}/events"
        async with c.stream("GET", f"{platform.url}{path}") as first:
            assert first.status_code == 200
            second = await c.get(f"{second_gateway}{path}")
            _assert_429(second, "sse_streams")
        # The first stream ended: its lease goes, and a stream opens again (on either replica).
        async with asyncio.timeout(10):
            while True:
                async with c.stream("GET", f"{second_gateway}{path}") as again:
                    if again.status_code == 200:
                        break
                    await again.aread()
                await asyncio.sleep(0.05)


async def test_the_admin_command_sets_and_shows_quotas(settings, pool) -> None:
    """`python -m runloom.admin quota`: overrides per tenant and for the platform, kept."""
    import os
    import subprocess
    import sys
    import uuid

    from runloom.gateway.store.tenants import create_tenant

    tenant = f"q-{uuid.uuid4().hex[:8]}"
    await create_tenant(pool, tenant, tenant)
    env = {**os.environ, "RUNLOOM_DATABASE_URL": settings.effective_database_url}

    def admin(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "runloom.admin", "quota", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    done = await asyncio.to_thread(admin, "set", tenant, "concurrent_runs=3", "weight=2.5")
    assert done.returncode == 0, done.stderr
    assert re.search(r"concurrent_runs\s+3 \*", done.stdout), done.stdout
    assert re.search(r"weight\s+2.5 \*", done.stdout) and re.search(r"burst\s+40\n", done.stdout)
    found = await quotas.read_limits(pool, tenant)
    assert (found.concurrent_runs, found.weight, found.queued_runs) == (3, 2.5, 500)
    dropped = await asyncio.to_thread(admin, "set", tenant, "weight=default")
    assert dropped.returncode == 0 and re.search(r"weight\s+1\n", dropped.stdout), dropped.stdout
    for bad, words in [
        (("set", tenant, "concurrent_runs=0"), "at least 1"),
        (("set", tenant, "speed=3"), "NAME one of"),
        (("set", "no-such-tenant", "weight=2"), "no tenant"),
    ]:
        refused = await asyncio.to_thread(admin, *bad)
        assert refused.returncode == 2 and words in refused.stderr, refused.stderr
    assert (await quotas.read_limits(pool, tenant)).concurrent_runs == 3


async def test_every_answer_carries_the_rate_limit_fields(platform, pool):
    """Not only a 429: any answer to an authenticated request says what is left of the
    request rate and when it is full again, so a client can slow down before it is refused."""
    _, headers = await _new_tenant(pool, requests_per_second=0.5, burst=5)
    async with httpx.AsyncClient(base_url=platform.url, headers=headers, timeout=10) as c:
        seen = []
        for path in (
            "/v1/runs",
            "/v1/runs/run_01JD6Q0W7XKZ3T9M4N5P6R8S2V",
            "/v1/agui/capabilities",
        ):
            r = await c.get(path)
            assert r.status_code in (200, 404), r.text
            policy = POLICY.match(r.headers["RateLimit-Policy"])
            current = CURRENT.match(r.headers["RateLimit"])
            assert policy and current, r.headers
            assert (policy[1], policy[2], policy[3]) == ("requests", "5", ";w=10")
            seen.append((int(current[2]), int(current[3])))
        # Each request took a token: 4, 3, 2 left; the bucket is full again in 2, 4, 6 s.
        assert [r for r, _ in seen] == [4, 3, 2], seen
        assert all(1 <= t <= 2 * (5 - r) for r, t in seen), seen
        # A stream's answer carries them too.
        run = (await c.post("/v1/runs", json={"question": "paced"})).json()
        async with c.stream("GET", f"/v1/runs/{run['id']}/events") as stream:
            assert stream.status_code == 200
            assert CURRENT.match(stream.headers["RateLimit"])
    async with httpx.AsyncClient(base_url=platform.url, timeout=10) as anonymous:
        r = await anonymous.get("/v1/runs")
        assert r.status_code == 401 and "RateLimit" not in r.headers


async def test_concurrent_posts_at_the_queue_limit_cannot_overshoot_it(
    platform, second_gateway, pool
):
    """POSTs in flight at once, on two replicas: exactly `queued_runs` are accepted, the rest
    get 429 with Retry-After and leave nothing stored."""
    limit, posts = 3, 14
    tenant, headers = await _new_tenant(pool, queued_runs=limit, burst=100)
    urls = [platform.url, second_gateway]
    async with httpx.AsyncClient(headers=headers, timeout=30) as c:
        answers = await asyncio.gather(
            *(
                c.post(
                    f"{urls[i % 2]}/v1/runs",
                    json={"question": f"race {i}"},
                    headers={"Idempotency-Key": f"race-{i}"},
                )
                for i in range(posts)
            )
        )
    accepted = [r for r in answers if r.status_code == 201]
    assert len(accepted) == limit, [r.status_code for r in answers]
    for r in answers:
        if r.status_code != 201:
            _assert_429(r, "queued_runs")
    ids = {r.json()["id"] for r in accepted}
    rows = await pool.fetch("SELECT id FROM runs WHERE tenant_id=$1", tenant)
    assert {row["id"] for row in rows} == ids
    keys = await pool.fetchval("SELECT count(*) FROM idempotency_keys WHERE tenant_id=$1", tenant)
    assert keys == limit
    # The places held while the POSTs were in flight are given back.
    assert not await pool.fetchval("SELECT count(*) FROM run_admissions WHERE tenant_id=$1", tenant)


def _agui_input(thread: str, run: str, text: str) -> dict[str, Any]:
    return {
        "threadId": thread,
        "runId": run,
        "messages": [{"id": f"m-{run}", "role": "user", "content": text}],
    }


async def test_agui_streams_count_against_the_open_streams_quota(platform, pool):
    """An AG-UI stream takes one of the tenant's `sse_streams` places like an SSE stream, gives
    it back when the client goes away, and a POST refused for it stores nothing."""
    tenant, headers = await _new_tenant(pool, sse_streams=1)
    async with httpx.AsyncClient(base_url=platform.url, headers=headers, timeout=10) as c:
        run = (await c.post("/v1/runs", json={"question": "watched"})).json()
        async with c.stream("GET", f"/v1/agui/runs/{run['id']}") as agui:
            assert agui.status_code == 200
            _assert_429(await c.get(f"/v1/runs/{run['id']}/events"), "sse_streams")
            _assert_429(await c.get(f"/v1/agui/runs/{run['id']}"), "sse_streams")
            refused = await c.post("/v1/agui", json=_agui_input("th-1", "r-1", "not stored"))
            _assert_429(refused, "sse_streams")
        assert await pool.fetchval("SELECT count(*) FROM runs WHERE tenant_id=$1", tenant) == 1

        # The AG-UI client went away (no terminal event): its place is free again.
        async def opens(path: str) -> bool:
            async with c.stream("GET", path) as again:
                if again.status_code == 200:
                    await anext(again.aiter_lines())  # it streams; then the client leaves
                return again.status_code == 200

        async with asyncio.timeout(10):
            while not await opens(f"/v1/runs/{run['id']}/events"):
                await asyncio.sleep(0.05)
        # ... and a POST /v1/agui, once a place is free, runs and streams.
        async with asyncio.timeout(10):
            while True:
                async with c.stream(
                    "POST", "/v1/agui", json=_agui_input("th-1", "r-1", "now stored")
                ) as posted:
                    if posted.status_code == 200:
                        break
                    await posted.aread()
                    assert posted.status_code == 429, posted.text
                await asyncio.sleep(0.05)
        assert await pool.fetchval("SELECT count(*) FROM runs WHERE tenant_id=$1", tenant) == 2


async def test_open_stream_leases_are_renewed_together_and_freed(platform, pool, monkeypatch):
    """Every open stream of a process keeps its lease (one statement renews them all), and a
    stream that ends frees its own at once."""
    monkeypatch.setattr(quotas, "LEASE_S", 1.5)  # renewed every 0.5 s
    tenant = await _tenant(pool, platform)
    release = [asyncio.Event(), asyncio.Event()]

    async def body(done: asyncio.Event) -> AsyncIterator[bytes]:
        yield b"first"
        await done.wait()

    async def stream(done: asyncio.Event) -> str:
        lease = await quotas.open_stream(pool, tenant)
        async for _ in quotas.Leased(pool, lease, body(done)):
            pass
        return lease

    async def live(lease_ids: set[str]) -> set[str]:
        rows = await pool.fetch(
            "SELECT lease_id FROM stream_leases WHERE expires_at > now() AND lease_id = ANY($1)",
            list(lease_ids),
        )
        return {r["lease_id"] for r in rows}

    async def outlived(lease_ids: set[str]) -> None:
        """Until the database's clock has passed the terms the leases hold now (each would
        have lapsed by then unless it was renewed)."""
        term = await pool.fetchval(
            "SELECT max(expires_at) FROM stream_leases WHERE lease_id = ANY($1)", list(lease_ids)
        )
        while not await pool.fetchval("SELECT now() > $1::timestamptz", term):
            await asyncio.sleep(0.05)

    async with asyncio.timeout(30):
        tasks = [asyncio.create_task(stream(done)) for done in release]
        while (
            len(
                leases := {
                    r["lease_id"]
                    for r in await pool.fetch(
                        "SELECT lease_id FROM stream_leases WHERE tenant_id=$1", tenant
                    )
                }
            )
            < 2
        ):
            await asyncio.sleep(0.05)
        await outlived(leases)  # lapsed unless renewed
        assert await live(leases) == leases
        release[0].set()
        ended = await tasks[0]
        while await pool.fetchval("SELECT 1 FROM stream_leases WHERE lease_id=$1", ended):
            await asyncio.sleep(0.05)
        await outlived(leases - {ended})
        assert await live(leases) == leases - {ended}
        release[1].set()
        await tasks[1]
