"""The event log against the real nats-server: at most once, dense seq, archive fallback."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid

from runloom.contracts import subjects
from runloom.contracts.events import RunCompleted, RunCreated, StepStarted
from runloom.contracts.ids import new_id, ulid
from runloom.runtime import bus
from runloom.runtime.archive import PgArchive, archive_event
from runloom.runtime.eventlog import EventLog, RunClosed


@contextlib.asynccontextmanager
async def short_dedup_window(js, settings, seconds: float):
    """Shrink RUN_EVENTS' duplicate window for one test (tests run one at a time)."""
    info = await js.stream_info(subjects.RUN_EVENTS_STREAM)
    cfg = dataclasses.replace(info.config, duplicate_window=seconds)
    await js.update_stream(cfg)
    try:
        yield
    finally:
        await bus.provision(js, settings)


async def test_crash_between_publish_and_bookkeeping_retried_after_the_dedup_window(js, settings):
    run_id = new_id("run")
    first = EventLog(js, "writer-a")
    await first.append(run_id, "t1", RunCreated(question="q"))
    event_id = ulid()
    async with short_dedup_window(js, settings, 0.5):
        stored = await first.append(run_id, "t1", StepStarted(step_id="s1"), event_id=event_id)
        # The writer dies before it records that the append succeeded; the dedup window
        # passes; its replacement (no memory, another process) retries the same event.
        await asyncio.sleep(1.2)  # the duplicate window itself must pass: nothing to poll
        raw = await js.publish(
            subjects.run_events(run_id), b"{}", headers={"Nats-Msg-Id": event_id}
        )
        assert not raw.duplicate  # the server no longer recognises the id
        await js.delete_msg(subjects.RUN_EVENTS_STREAM, raw.seq)
        again = await EventLog(js, "writer-b").append(
            run_id, "t1", StepStarted(step_id="s1"), event_id=event_id, check_existing=True
        )
    assert again.seq == stored.seq == 2
    events = await first.events(run_id)
    assert [e.id for e in events].count(event_id) == 1
    assert [e.seq for e in events] == [1, 2]


async def test_a_retry_whose_first_attempt_landed_is_not_appended_twice(js):
    """A publish whose ack was lost (it landed): the retry finds it at the expected place."""
    run_id = new_id("run")
    log = EventLog(js, "w")
    await log.append(run_id, "t1", RunCreated(question="q"))
    tail = await log.tail(run_id)
    event_id = ulid()
    # Attempt 1 lands but its writer never hears back; another writer appends meanwhile.
    landed = await EventLog(js, "ghost").append(
        run_id, "t1", StepStarted(step_id="x"), event_id=event_id
    )
    await EventLog(js, "other").append(run_id, "t1", StepStarted(step_id="y"))
    log._tails[run_id] = tail  # the writer still believes the tail it saw before attempt 1
    result = await log.append(run_id, "t1", StepStarted(step_id="x"), event_id=event_id)
    assert result.seq == landed.seq
    ids = [e.id for e in await log.events(run_id)]
    assert ids.count(event_id) == 1 and len(ids) == 3


async def test_concurrent_writers_in_tasks_keep_seq_dense_and_unique(js):
    run_id = new_id("run")
    logs = [EventLog(js, f"w{i}") for i in range(6)]
    await logs[0].append(run_id, "t1", RunCreated(question="q"))

    async def write(log: EventLog) -> None:
        for i in range(15):
            await log.append(run_id, "t1", StepStarted(step_id=f"{log.producer}-{i}"))

    await asyncio.gather(*(write(lg) for lg in logs))
    events = await logs[0].events(run_id)
    assert [e.seq for e in events] == list(range(1, 92))
    assert len({e.id for e in events}) == 91


async def test_nothing_follows_the_terminal_event(js):
    run_id = new_id("run")
    log = EventLog(js, "w")
    await log.append(run_id, "t1", RunCreated(question="q"))
    await log.append(run_id, "t1", RunCompleted())
    for writer in (log, EventLog(js, "late")):
        try:
            await writer.append(run_id, "t1", StepStarted(step_id="late"))
        except RunClosed as closed:
            assert closed.terminal.type == "run.completed"
        else:
            raise AssertionError("appended after the terminal event")


async def test_long_reads_and_reads_from_any_position(js):
    run_id = new_id("run")
    log = EventLog(js, "w")
    await log.append(run_id, "t1", RunCreated(question="q"))
    for i in range(120):  # beyond the direct-get limit: the consumer path takes over
        await log.append(run_id, "t1", StepStarted(step_id=f"s{i}"))
    everything = [se async for se in log.read(run_id)]
    assert [se.event.seq for se in everything] == list(range(1, 122))
    middle = everything[59]
    rest = [se.event.seq async for se in log.read(run_id, after_stream_seq=middle.stream_seq)]
    assert rest == list(range(61, 122))


async def test_seq_goes_on_from_the_archive_when_the_hot_window_dropped_the_run(js, pool):
    run_id = new_id("run")
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    log = EventLog(js, "w", archive=PgArchive(pool))
    for payload in (RunCreated(question="q"), StepStarted(step_id="a"), StepStarted(step_id="b")):
        await log.append(run_id, tenant, payload)
    async for se in log.read(run_id):
        await archive_event(pool, se.raw, se.stream_seq)
    # The hot window lets the run's messages go (as max_age would).
    await js.purge_stream(subjects.RUN_EVENTS_STREAM, subject=subjects.run_events(run_id))
    fresh = EventLog(js, "w2", archive=PgArchive(pool))
    ev = await fresh.append(run_id, tenant, StepStarted(step_id="c"))
    assert ev.seq == 4
    assert [e.seq for e in await fresh.events(run_id)] == [4]


async def test_concurrent_writers_of_the_same_event_store_it_once(js):
    """Two writers (one process, one cached tail) append the same event id at once."""
    run_id = new_id("run")
    log = EventLog(js, "shared")
    await log.append(run_id, "t1", RunCreated(question="q"))
    event_id = ulid()
    results = await asyncio.gather(
        *(log.append(run_id, "t1", StepStarted(step_id="x"), event_id=event_id) for _ in range(6)),
        *(
            EventLog(js, f"other{i}").append(
                run_id, "t1", StepStarted(step_id="x"), event_id=event_id
            )
            for i in range(3)
        ),
    )
    assert {r.seq for r in results} == {2}
    assert [e.id for e in await log.events(run_id)].count(event_id) == 1
