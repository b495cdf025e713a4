"""Faults mid-stream: nats-server SIGKILLed and restarted, the gateway killed and replaced.

Clients reconnect with their last cursor, as EventSource does, and must see every event
once, in order.
"""

from __future__ import annotations

import asyncio
import contextlib

import httpx
import pytest
from runloom.contracts.events import RunCompleted, StepStarted
from runloom.contracts.ids import ulid
from runloom.runtime.eventlog import EventLog

pytestmark = pytest.mark.platform_services("gateway")


async def append_surely(log: EventLog, run_id: str, tenant: str, payload) -> None:
    """Append through outages: retry the same event id until the log has it (once)."""
    event_id = ulid()
    for attempt in range(200):
        try:
            await log.append(run_id, tenant, payload, event_id=event_id, check_existing=attempt > 0)
            return
        except Exception:
            await asyncio.sleep(0.1)
    raise AssertionError("could not append for 20 s")


async def test_nats_server_sigkilled_mid_stream(platform, servers, js, reader):
    async with httpx.AsyncClient(
        base_url=platform.url, headers=platform.headers(), timeout=10
    ) as c:
        run_id = (await c.post("/v1/runs", json={"question": "survive"})).json()["id"]
        log = EventLog(js, "w", publish_timeout=1.0)
        tenant = (await log.events(run_id))[0].tenant_id
        readers = [reader() for _ in range(3)]
        tasks = [asyncio.create_task(r.follow(c, f"/v1/runs/{run_id}/events")) for r in readers]
        try:
            for i in range(15):
                await append_surely(log, run_id, tenant, StepStarted(step_id=f"a{i}"))
            servers.nats.kill()
            await asyncio.sleep(0.5)  # the outage itself
            servers.nats.start()
            for i in range(15):
                await append_surely(log, run_id, tenant, StepStarted(step_id=f"b{i}"))
            await append_surely(log, run_id, tenant, RunCompleted())
            await asyncio.wait_for(asyncio.gather(*tasks), 60)
        finally:
            if servers.nats.proc is None or servers.nats.proc.poll() is not None:
                servers.nats.start()
            for t in tasks:
                t.cancel()
        for r in readers:
            assert r.seqs() == list(range(1, 33)), r.seqs()
        events = await log.events(run_id)
        assert [e.seq for e in events] == list(range(1, 33))


async def test_attaching_while_nats_is_away_answers_503_and_the_retry_streams(
    platform, servers, js, reader
):
    async with httpx.AsyncClient(
        base_url=platform.url, headers=platform.headers(), timeout=30
    ) as c:
        run_id = (await c.post("/v1/runs", json={"question": "away"})).json()["id"]
        log = EventLog(js, "w", publish_timeout=1.0)
        tenant = (await log.events(run_id))[0].tenant_id
        servers.nats.kill()
        try:
            async with c.stream("GET", f"/v1/runs/{run_id}/events") as resp:
                body = await resp.aread()
        finally:
            servers.nats.start()
        assert resp.status_code == 503, body
        assert resp.headers["content-type"].startswith("application/problem+json")
        assert float(resp.headers["Retry-After"]) >= 1
        assert "retry" in resp.json()["detail"].lower()
        await append_surely(log, run_id, tenant, RunCompleted())
        r = reader()
        await r.follow(c, f"/v1/runs/{run_id}/events")
        assert r.seqs() == [1, 2]


async def test_gateway_killed_mid_stream_and_replaced(platform, js, reader):
    async with httpx.AsyncClient(
        base_url=platform.url, headers=platform.headers(), timeout=10
    ) as c:
        run_id = (await c.post("/v1/runs", json={"question": "survive"})).json()["id"]
        log = EventLog(js, "w")
        tenant = (await log.events(run_id))[0].tenant_id
        readers = [reader() for _ in range(3)]
        tasks = [asyncio.create_task(r.follow(c, f"/v1/runs/{run_id}/events")) for r in readers]
        try:
            for i in range(10):
                await log.append(run_id, tenant, StepStarted(step_id=f"a{i}"))
            gateway = platform["gateway-1"]
            gateway.kill()
            for i in range(10):  # written while no gateway runs
                await log.append(run_id, tenant, StepStarted(step_id=f"b{i}"))
            gateway.start()
            await asyncio.to_thread(platform.wait_ready, gateway)
            for i in range(10):
                await log.append(run_id, tenant, StepStarted(step_id=f"c{i}"))
            await log.append(run_id, tenant, RunCompleted())
            await asyncio.wait_for(asyncio.gather(*tasks), 60)
        finally:
            for t in tasks:
                t.cancel()
                with contextlib.suppress(BaseException):
                    await t
        for r in readers:
            assert r.seqs() == list(range(1, 33)), r.seqs()
            assert r.reconnects >= 1  # it really was cut and came back


async def test_sigterm_drains_streams_at_once_and_clients_resume(platform, js, reader):
    async with httpx.AsyncClient(
        base_url=platform.url, headers=platform.headers(), timeout=10
    ) as c:
        run_id = (await c.post("/v1/runs", json={"question": "drain"})).json()["id"]
        log = EventLog(js, "w")
        tenant = (await log.events(run_id))[0].tenant_id
        r = reader()
        task = asyncio.create_task(r.read(c, f"/v1/runs/{run_id}/events"))
        await log.append(run_id, tenant, StepStarted(step_id="a"))
        await asyncio.wait_for(_until(lambda: len(r.events) >= 2), 10)
        gateway = platform["gateway-1"]
        started = asyncio.get_running_loop().time()
        await asyncio.to_thread(gateway.stop, 10)
        stopped_in = asyncio.get_running_loop().time() - started
        await asyncio.wait_for(task, 5)
        assert r.ended  # the server finished the stream cleanly, not a reset connection
        assert stopped_in < 4  # it did not sit out uvicorn's graceful timeout (5 s)
        await log.append(run_id, tenant, RunCompleted())
        gateway.start()
        await asyncio.to_thread(platform.wait_ready, gateway)
        await r.follow(c, f"/v1/runs/{run_id}/events")
        assert r.seqs() == [1, 2, 3]


async def _until(check) -> None:
    while not check():
        await asyncio.sleep(0.02)
