"""Property: concurrent writers (tasks and processes) and clients that drop and resume at
random points; every client sees exactly seq 1..n, in order, once."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from runloom.contracts.events import RunCompleted, StepStarted
from runloom.runtime.eventlog import EventLog

pytestmark = pytest.mark.platform_services("gateway")

WRITER = Path(__file__).with_name("writer_process.py")

scenario = st.fixed_dictionaries(
    {
        "task_writers": st.lists(st.integers(1, 8), min_size=1, max_size=3),
        "process_writers": st.lists(st.integers(1, 8), min_size=1, max_size=2),
        "clients": st.lists(
            st.tuples(
                st.floats(0, 0.3),  # when it first connects
                st.lists(st.integers(1, 30), max_size=3),  # after how many events it drops
            ),
            min_size=1,
            max_size=4,
        ),
    }
)


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=scenario)
async def test_every_client_sees_every_seq_once_in_order(platform, settings_, js, reader, case):
    async with httpx.AsyncClient(
        base_url=platform.url, headers=platform.headers(), timeout=10
    ) as c:
        run_id = (await c.post("/v1/runs", json={"question": "property"})).json()["id"]
        path = f"/v1/runs/{run_id}/events"
        tenant = (await EventLog(js, "probe").events(run_id))[0].tenant_id

        async def task_writer(i: int, n: int) -> None:
            log = EventLog(js, f"task/{i}")
            for k in range(n):
                await log.append(run_id, tenant, StepStarted(step_id=f"t{i}-{k}"))

        async def process_writer(i: int, n: int) -> None:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                str(WRITER),
                settings_.effective_nats_url,
                run_id,
                tenant,
                str(n),
                f"p{i}",
            )
            assert await proc.wait() == 0

        async def client(delay: float, drops: list[int]):
            await asyncio.sleep(delay)  # a client arriving later, mid-run
            r = reader()
            for k in sorted(drops):
                await r.read(c, path, stop=lambda e, k=k: len(r.events) >= k)
            await r.follow(c, path, timeout=40)
            return r

        clients = [asyncio.create_task(client(d, drops)) for d, drops in case["clients"]]
        await asyncio.gather(
            *(task_writer(i, n) for i, n in enumerate(case["task_writers"])),
            *(process_writer(i, n) for i, n in enumerate(case["process_writers"])),
        )
        await EventLog(js, "closer").append(run_id, tenant, RunCompleted())
        total = 2 + sum(case["task_writers"]) + sum(case["process_writers"])
        for r in await asyncio.wait_for(asyncio.gather(*clients), 50):
            assert r.seqs() == list(range(1, total + 1))


@pytest.fixture
def settings_(settings):
    return settings
