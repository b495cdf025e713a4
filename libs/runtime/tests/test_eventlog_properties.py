"""Property: writers on connections of their own append in bursts (group commit, atomic
batches) and one at a time, some of the same event ids, from stale tails, while a terminal
event lands at a random point: the run's log is seq 1..n, each id once, nothing after the
terminal, and every append's answer is what the log stores."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from runloom.contracts.events import TERMINAL_TYPES, Event, RunCompleted, RunCreated, StepStarted
from runloom.contracts.ids import new_id, ulid
from runloom.runtime import bus
from runloom.runtime.eventlog import EventLog, RunClosed

scenario = st.fixed_dictionaries(
    {
        # per writer: the sizes of its bursts (1 = one append at a time)
        "writers": st.lists(
            st.lists(st.integers(1, 25), min_size=1, max_size=4), min_size=1, max_size=4
        ),
        "shared": st.integers(0, 4),  # event ids every writer appends in its first burst
        "terminal_after": st.none() | st.integers(0, 80),  # answers before the terminal goes
        "stale": st.booleans(),  # each burst starts from the tail seen when the run began
    }
)


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=scenario)
async def test_concurrent_group_commits_keep_the_log_dense_unique_and_closed(js, settings_, case):
    run_id = new_id("run")
    await EventLog(js, "creator").append(run_id, "t1", RunCreated(question="q"))
    start = await EventLog(js, "probe").tail(run_id)
    shared = [f"{run_id}:shared-{k}" for k in range(case["shared"])]
    answers: list[tuple[str, Event | BaseException]] = []
    answered = asyncio.Event()
    terminal_after = case["terminal_after"]

    def record(event_id: str, outcome: Event | BaseException) -> None:
        answers.append((event_id, outcome))
        if terminal_after is not None and len(answers) >= terminal_after:
            answered.set()

    async def append(log: EventLog, payload, event_id: str) -> None:
        try:
            record(event_id, await log.append(run_id, "t1", payload, event_id=event_id))
        except RunClosed as closed:
            record(event_id, closed)

    async def writer(i: int, bursts: list[int]) -> None:
        nc = await bus.connect_as(settings_, f"prop-writer-{i}")
        try:
            log = EventLog(nc.jetstream(), f"w{i}", batch_min=2)
            for b, size in enumerate(bursts):
                if case["stale"]:
                    log._tails[run_id] = start
                ids = [ulid() for _ in range(size)] + (shared if b == 0 else [])
                await asyncio.gather(
                    *(append(log, StepStarted(step_id=f"w{i}"), event_id) for event_id in ids)
                )
        finally:
            await nc.close()

    async def closer() -> None:
        if terminal_after is None:
            return
        await answered.wait()
        await append(EventLog(js, "closer"), RunCompleted(), f"{run_id}:end")

    writers = [writer(i, bursts) for i, bursts in enumerate(case["writers"])]
    closing = asyncio.create_task(closer())
    await asyncio.wait_for(asyncio.gather(*writers), 60)
    if terminal_after is not None and not answered.is_set():
        answered.set()  # fewer answers than asked for: close after all of them
    await asyncio.wait_for(closing, 30)

    events = await EventLog(js, "reader").events(run_id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    stored = {e.id: e for e in events}
    assert len(stored) == len(events), "an event id stored twice"
    terminals = [e for e in events if e.type in TERMINAL_TYPES]
    assert len(terminals) <= 1 and (not terminals or terminals[0] is events[-1])
    for event_id, outcome in answers:
        if isinstance(outcome, Event):
            mine = stored.get(event_id)
            assert mine is not None, "an answered append is not in the log"
            assert (mine.seq, mine.type, mine.data) == (outcome.seq, outcome.type, outcome.data)
        else:
            assert isinstance(outcome, RunClosed), outcome
            # Refused: not stored, unless another writer of the same id stored it.
            assert event_id not in stored or event_id in shared
    asked = {event_id for event_id, _ in answers}
    assert set(stored) - asked == {events[0].id}
    if terminal_after is None:
        assert all(isinstance(o, Event) for _, o in answers)


@pytest.fixture
def settings_(settings):
    """The session's Settings (the name `settings` is hypothesis' here)."""
    return settings
