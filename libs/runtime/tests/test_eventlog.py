"""The event log against the real nats-server: at most once, dense seq (its fallback to the
gateway's Postgres archive is tested with the archive, in services/gateway)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses

from nats.js.errors import NotFoundError
from runloom.contracts import subjects
from runloom.contracts.events import RunCompleted, RunCreated, StepStarted
from runloom.contracts.ids import new_id, ulid
from runloom.runtime import bus
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


# -- group commit ---------------------------------------------------------------------------


async def batch_ids(js, run_id: str) -> list[str | None]:
    """The `Nats-Batch-Id` each stored message of the run carries (None: appended alone)."""
    out: list[str | None] = []
    seq = 0
    while True:
        try:
            msg = await js.get_msg(
                subjects.RUN_EVENTS_STREAM,
                seq=seq + 1,
                subject=subjects.run_events(run_id),
                next=True,
                direct=True,
            )
        except NotFoundError:
            return out
        seq = msg.seq
        out.append((msg.headers or {}).get("Nats-Batch-Id"))


async def test_appends_waiting_together_are_stored_as_one_batch_in_call_order(js):
    run_id = new_id("run")
    log = EventLog(js, "w")
    await log.append(run_id, "t1", RunCreated(question="q"))
    stored = await asyncio.gather(
        *(log.append(run_id, "t1", StepStarted(step_id=f"s{i}")) for i in range(41))
    )
    assert [e.seq for e in stored] == list(range(2, 43))
    events = await log.events(run_id)
    assert [e.seq for e in events] == list(range(1, 43))
    assert [e.data["step_id"] for e in events[1:]] == [f"s{i}" for i in range(41)]
    assert [e.id for e in events[1:]] == [e.id for e in stored]
    batches = await batch_ids(js, run_id)
    assert batches[0] is None and batches[1] is not None
    assert set(batches[1:]) == {batches[1]}


async def test_nothing_follows_a_terminal_event_in_the_same_group(js):
    run_id = new_id("run")
    log = EventLog(js, "w", batch_min=2)
    await log.append(run_id, "t1", RunCreated(question="q"))
    payloads = [StepStarted(step_id=f"a{i}") for i in range(5)]
    payloads += [RunCompleted()] + [StepStarted(step_id=f"b{i}") for i in range(5)]
    results = await asyncio.gather(
        *(log.append(run_id, "t1", p) for p in payloads), return_exceptions=True
    )
    assert [r.seq for r in results[:6]] == list(range(2, 8))
    assert all(isinstance(r, RunClosed) for r in results[6:])
    events = await EventLog(js, "reader").events(run_id)
    assert [e.seq for e in events] == list(range(1, 8))
    assert events[-1].type == "run.completed"


async def test_a_batch_that_landed_unheard_is_not_appended_again(js, settings):
    """The writer never heard its batch was stored: within the dedup window (the server
    refuses the repeated ids) and after it (the expected sequence is stale)."""
    for window in (None, 0.5):
        run_id = new_id("run")
        log = EventLog(js, "w", batch_min=2)
        await log.append(run_id, "t1", RunCreated(question="q"))
        stale = await log.tail(run_id)
        ids = [ulid() for _ in range(6)]
        payloads = [StepStarted(step_id=f"s{i}") for i in range(6)]
        ghost = EventLog(js, "ghost", batch_min=2)
        landed = await asyncio.gather(
            *(ghost.append(run_id, "t1", p, event_id=i) for p, i in zip(payloads, ids, strict=True))
        )
        async with contextlib.AsyncExitStack() as stack:
            if window is not None:
                await stack.enter_async_context(short_dedup_window(js, settings, window))
                await asyncio.sleep(window + 0.7)  # the window itself must pass
            log._tails[run_id] = stale  # what the writer believed before its batch went
            again = await asyncio.gather(
                *(
                    log.append(run_id, "t1", p, event_id=i)
                    for p, i in zip(payloads, ids, strict=True)
                )
            )
        assert [e.seq for e in again] == [e.seq for e in landed]
        events = await log.events(run_id)
        assert [e.id for e in events[1:]] == ids
        assert [e.seq for e in events] == list(range(1, 8))


async def test_an_id_another_writer_stored_sends_the_rest_of_its_group_one_by_one(js):
    run_id = new_id("run")
    log = EventLog(js, "w", batch_min=2)
    await log.append(run_id, "t1", RunCreated(question="q"))
    shared = ulid()
    other = await EventLog(js, "other").append(
        run_id, "t1", StepStarted(step_id="x"), event_id=shared
    )
    ids = [ulid(), ulid(), shared, ulid(), ulid()]
    results = await asyncio.gather(
        *(log.append(run_id, "t1", StepStarted(step_id="x"), event_id=i) for i in ids)
    )
    assert results[2].seq == other.seq == 2
    events = await log.events(run_id)
    assert [e.seq for e in events] == list(range(1, 7))
    assert sorted(e.id for e in events[1:]) == sorted(ids)


async def test_an_append_given_up_before_it_was_sent_is_not_stored(js):
    run_id = new_id("run")
    log = EventLog(js, "w", batch_min=2)
    await log.append(run_id, "t1", RunCreated(question="q"))
    tasks = [
        asyncio.create_task(log.append(run_id, "t1", StepStarted(step_id=f"s{i}")))
        for i in range(4)
    ]
    await asyncio.sleep(0)  # each has queued its event; the run's group is not taken yet
    tasks[2].cancel()
    done = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(done[2], asyncio.CancelledError)
    events = await log.events(run_id)
    assert [e.data.get("step_id") for e in events[1:]] == ["s0", "s1", "s3"]
    assert [e.seq for e in events] == [1, 2, 3, 4]


async def test_a_caller_giving_up_while_its_append_is_sent_leaves_another_of_the_same_id_its_answer(
    js,
):
    """The first append to an idle run is sent from its caller's task: cancelling that caller
    must not cancel a second caller of the same event id, which gets the event stored once."""
    run_id = new_id("run")
    log = EventLog(js, "w")
    await log.append(run_id, "t1", RunCreated(question="q"))
    event_id = ulid()
    first = asyncio.create_task(
        log.append(run_id, "t1", StepStarted(step_id="x"), event_id=event_id)
    )
    for _ in range(3):  # the first one's turn has passed: it is alone, and being sent
        await asyncio.sleep(0)
    second = asyncio.create_task(
        log.append(run_id, "t1", StepStarted(step_id="x"), event_id=event_id)
    )
    first.cancel()
    stored = await asyncio.wait_for(second, 10)
    assert stored.id == event_id and stored.seq == 2
    events = await EventLog(js, "reader").events(run_id)
    assert [e.id for e in events[1:]] == [event_id]


async def test_a_stream_without_atomic_batches_gets_one_append_at_a_time(js, settings):
    info = await js.stream_info(subjects.RUN_EVENTS_STREAM)
    await js.update_stream(dataclasses.replace(info.config, allow_atomic=False))
    try:
        run_id = new_id("run")
        log = EventLog(js, "w", batch_min=2)
        await log.append(run_id, "t1", RunCreated(question="q"))
        await asyncio.gather(
            *(log.append(run_id, "t1", StepStarted(step_id=f"s{i}")) for i in range(10))
        )
    finally:
        await bus.provision(js, settings)
    assert [e.seq for e in await log.events(run_id)] == list(range(1, 12))
    assert set(await batch_ids(js, run_id)) == {None}


async def test_a_wrong_guess_that_a_run_is_new_is_corrected_by_the_expected_sequence(js):
    run_id = new_id("run")
    await EventLog(js, "other").append(run_id, "t1", RunCreated(question="q"))
    log = EventLog(js, "w")
    log.expect_new(run_id)  # wrong: the run has an event already
    ev = await log.append(run_id, "t1", StepStarted(step_id="a"))
    assert ev.seq == 2
    assert [e.seq for e in await log.events(run_id)] == [1, 2]


async def test_a_batch_is_stored_with_each_message_s_headers_and_payload_as_sent(js):
    """The staged messages of an atomic batch are framed by hand (not through `publish`):
    the server stores each with its own headers and payload, in order, and a line break in a
    header value becomes a space instead of ending the header."""
    from runloom.runtime import atomic

    subject = subjects.run_events(new_id("run"))
    messages = [
        (b"first", {"X-Note": "one\r\ntwo", "Nats-Msg-Id": ulid()}),
        (b"", {"Nats-Msg-Id": ulid()}),  # an empty payload
        (b'{"x": "\xc3\xa9"}', {"X-Note": "plain", "Nats-Msg-Id": ulid()}),
    ]
    ack = await atomic.publish_batch(js, subject, messages, timeout=5)
    stored = [
        await js.get_msg(subjects.RUN_EVENTS_STREAM, seq)
        for seq in range(ack.seq - len(messages) + 1, ack.seq + 1)
    ]
    assert [m.subject for m in stored] == [subject] * 3
    assert [m.data or b"" for m in stored] == [b"first", b"", b'{"x": "\xc3\xa9"}']
    assert [m.headers["Nats-Msg-Id"] for m in stored] == [h["Nats-Msg-Id"] for _, h in messages]
    assert stored[0].headers["X-Note"] == "one  two"
    assert stored[2].headers["X-Note"] == "plain"
    assert [m.headers["Nats-Batch-Sequence"] for m in stored] == ["1", "2", "3"]
