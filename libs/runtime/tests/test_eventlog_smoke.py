import asyncio

from runloom.contracts.events import RunCreated, StepStarted
from runloom.contracts.ids import new_id
from runloom.runtime.eventlog import EventLog


async def test_concurrent_writers_get_dense_seq(js):
    run_id = new_id("run")
    logs = [EventLog(js, f"w{i}") for i in range(4)]
    await logs[0].append(run_id, "t1", RunCreated(question="q"))

    async def writer(log: EventLog, n: int) -> None:
        for i in range(n):
            await log.append(run_id, "t1", StepStarted(step_id=f"{log.producer}-{i}"))

    await asyncio.gather(*(writer(lg, 10) for lg in logs))
    events = await logs[0].events(run_id)
    assert [e.seq for e in events] == list(range(1, 42))
    assert len({e.id for e in events}) == 41
