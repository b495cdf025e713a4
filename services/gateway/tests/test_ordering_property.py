"""Property: concurrent writers (tasks and processes) and clients that drop and resume at
random points; every client sees exactly seq 1..n, in order, once."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from runloom.contracts.events import RunCompleted, StepStarted
from runloom.devkit import busauth
from runloom.runtime.config import Settings
from runloom.runtime.eventlog import EventLog

pytestmark = pytest.mark.platform_services("gateway")

WRITER = Path(__file__).with_name("writer_process.py")

clients = st.lists(
    st.tuples(
        st.floats(0, 0.3),  # when it first connects
        st.lists(st.integers(1, 30), max_size=3),  # after how many events it drops
    ),
    min_size=1,
    max_size=4,
)
scenario = st.fixed_dictionaries(
    {
        "task_writers": st.lists(st.integers(1, 8), min_size=1, max_size=3),
        "process_writers": st.lists(st.integers(1, 8), min_size=1, max_size=2),
        "clients": clients,
    }
)


async def check_every_client_sees_every_seq_once(
    platform, js, reader, clients_case, write: Callable[[str, str], Awaitable[int]]
) -> None:
    """Create a run, start the clients, let `write(run_id, tenant)` append (it says how
    many), end the run: every client must see seq 1..n once, in order."""
    async with httpx.AsyncClient(
        base_url=platform.url, headers=platform.headers(), timeout=10
    ) as c:
        run_id = (await c.post("/v1/runs", json={"question": "property"})).json()["id"]
        path = f"/v1/runs/{run_id}/events"
        tenant = (await EventLog(js, "probe").events(run_id))[0].tenant_id

        async def client(delay: float, drops: list[int]):
            await asyncio.sleep(delay)  # a client arriving later, mid-run
            r = reader()
            for k in sorted(drops):
                await r.read(c, path, stop=lambda e, k=k: len(r.events) >= k)
            await r.follow(c, path, timeout=40)
            return r

        tasks = [asyncio.create_task(client(d, drops)) for d, drops in clients_case]
        total = 2 + await write(run_id, tenant)
        await EventLog(js, "closer").append(run_id, tenant, RunCompleted())
        for r in await asyncio.wait_for(asyncio.gather(*tasks), 50):
            assert r.seqs() == list(range(1, total + 1))


async def process_writer(
    settings: Settings, run_id: str, tenant: str, n: int, name: str, burst=1
) -> None:
    """`writer_process.py` appending n events in its own process, as the orchestrator."""
    args = [settings.effective_nats_url, run_id, tenant, str(n), name, str(burst)]
    creds = busauth.credential(settings.home, "orchestrator")
    env = {**os.environ, "RUNLOOM_NATS_CREDENTIALS": str(creds)}
    proc = await asyncio.create_subprocess_exec(sys.executable, str(WRITER), *args, env=env)
    assert await proc.wait() == 0


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=scenario)
async def test_every_client_sees_every_seq_once_in_order(platform, settings_, js, reader, case):

    async def write(run_id: str, tenant: str) -> int:
        async def task_writer(i: int, n: int) -> None:
            log = EventLog(js, f"task/{i}")
            for k in range(n):
                await log.append(run_id, tenant, StepStarted(step_id=f"t{i}-{k}"))

        await asyncio.gather(
            *(task_writer(i, n) for i, n in enumerate(case["task_writers"])),
            *(
                process_writer(settings_, run_id, tenant, n, f"p{i}")
                for i, n in enumerate(case["process_writers"])
            ),
        )
        return sum(case["task_writers"]) + sum(case["process_writers"])

    await check_every_client_sees_every_seq_once(platform, js, reader, case["clients"], write)


burst_scenario = st.fixed_dictionaries(
    {
        # (writers, events each, events waiting together): tasks sharing one event log
        "task_bursts": st.tuples(st.integers(1, 3), st.integers(1, 40), st.integers(2, 20)),
        # (events, events waiting together) per writer process
        "process_bursts": st.lists(
            st.tuples(st.integers(1, 40), st.integers(2, 20)), min_size=1, max_size=2
        ),
        "clients": clients,
    }
)


@settings(
    max_examples=5,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=burst_scenario)
async def test_group_committed_bursts_reach_every_client_once_in_order(
    platform, settings_, js, reader, case
):
    """The same property when appends wait together and go as atomic batches."""
    writers, each, burst = case["task_bursts"]

    async def write(run_id: str, tenant: str) -> int:
        shared = EventLog(js, "tasks", batch_min=2)

        async def task_writer(i: int) -> None:
            for start in range(0, each, burst):
                await asyncio.gather(
                    *(
                        shared.append(run_id, tenant, StepStarted(step_id=f"t{i}-{k}"))
                        for k in range(start, min(start + burst, each))
                    )
                )

        await asyncio.gather(
            *(task_writer(i) for i in range(writers)),
            *(
                process_writer(settings_, run_id, tenant, n, f"p{i}", b)
                for i, (n, b) in enumerate(case["process_bursts"])
            ),
        )
        return writers * each + sum(n for n, _ in case["process_bursts"])

    await check_every_client_sees_every_seq_once(platform, js, reader, case["clients"], write)


@pytest.fixture
def settings_(settings):
    return settings
