"""The archive: idempotent copy into run_events and the runs read model, in any order."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

from runloom.contracts import subjects
from runloom.contracts.commands import RunStalledRequest
from runloom.contracts.events import (
    ClarificationRequested,
    PlanProposed,
    PlanStep,
    RunCompleted,
    RunCreated,
    RunStarted,
    SourceFound,
    StepStarted,
    Usage,
    UsageRecorded,
)
from runloom.contracts.ids import new_id
from runloom.gateway.store.archive import PgArchive, archive_batch, archive_event, mark_stalled
from runloom.gateway.usecases import RUN_COLUMNS, run_view
from runloom.runtime.eventlog import EventLog


async def tenant(pool) -> str:
    tid = f"t-{uuid.uuid4().hex[:8]}"
    await pool.execute("INSERT INTO tenants(id, name) VALUES ($1, $1)", tid)
    return tid


async def test_archive_is_idempotent_and_order_free(js, pool):
    tid = await tenant(pool)
    run_id = new_id("run")
    log = EventLog(js, "w")
    for payload in [
        RunCreated(question="How do ordered consumers work?"),
        RunStarted(worker="w1"),
        PlanProposed(steps=[PlanStep(step_id="a", title="A"), PlanStep(step_id="b", title="B")]),
        SourceFound(source_id="s1", title="t", passage="p"),
        SourceFound(source_id="s1", title="t", passage="p"),
        SourceFound(source_id="s2", title="t", passage="p"),
        UsageRecorded(usage_id="u1", kind="provider", cost_usd=0.5, usage=Usage()),
        UsageRecorded(usage_id="u1", kind="provider", cost_usd=0.5, usage=Usage()),
        UsageRecorded(usage_id="u2", kind="tool", cost_usd=0.25, usage=Usage()),
        ClarificationRequested(question="Which?"),
    ]:
        await log.append(run_id, tid, payload)
    stored = [se async for se in log.read(run_id)]
    shuffled = stored + stored[3:7]  # redeliveries
    random.Random(7).shuffle(shuffled)
    for i, se in enumerate(shuffled):
        await archive_event(pool, se.raw, se.stream_seq)
        if i == 2:
            row = await pool.fetchrow("SELECT last_seq FROM runs WHERE id=$1", run_id)
            assert row is None or row["last_seq"] <= 3  # never past a gap
    row = await pool.fetchrow("SELECT * FROM runs WHERE id=$1", run_id)
    assert row["status"] == "waiting_clarification"
    assert row["last_seq"] == row["event_count"] == 10
    assert (row["source_count"], row["step_count"]) == (2, 2)
    assert float(row["spent_usd"]) == 0.75
    assert row["title"] == "How do ordered consumers work?"
    assert row["started_at"] is not None and row["ended_at"] is None
    raws = await pool.fetch("SELECT raw FROM run_events WHERE run_id=$1 ORDER BY seq", run_id)
    assert [bytes(r["raw"]) for r in raws] == [se.raw for se in stored]  # the exact bytes

    done = await log.append(run_id, tid, RunCompleted(partial=True, missing=["b: no source"]))
    async for se in log.read(run_id, after_seq=done.seq - 1):
        await archive_event(pool, se.raw, se.stream_seq)
    row = await pool.fetchrow("SELECT * FROM runs WHERE id=$1", run_id)
    assert (row["status"], row["partial"], row["missing"]) == ("completed", True, ["b: no source"])
    assert row["ended_at"] is not None

    archive = PgArchive(pool)
    assert (await archive.last(run_id)).type == "run.completed"
    assert (await archive.find(run_id, stored[4].event.id)).seq == 5
    assert await archive.max_stream_seq(run_id) >= stored[-1].stream_seq


READ_MODEL = (
    "SELECT status, title, last_seq, event_count, source_count, step_count, spent_usd, partial,"
    " error, missing, terminal_type, started_count, cancel_requested FROM runs WHERE id=$1"
)


async def test_batches_project_what_events_one_by_one_do_and_never_pass_a_gap(js, pool):
    """The consumer archives in batches (several runs, redeliveries, any order): after every
    batch each run's read model stands exactly at the end of what is archived without a gap,
    and at the end it says what archiving the same events one by one says."""
    tid = await tenant(pool)
    log = EventLog(js, "w")
    payloads = [
        RunCreated(question="Which consumers keep order?"),
        RunStarted(worker="w1"),
        PlanProposed(steps=[PlanStep(step_id="a", title="A")]),
        *[SourceFound(source_id=f"s{i % 3}", title="t", passage="p") for i in range(6)],
        UsageRecorded(usage_id="u1", kind="provider", cost_usd=0.5, usage=Usage()),
        UsageRecorded(usage_id="u1", kind="provider", cost_usd=0.5, usage=Usage()),
        *[PlanProposed(steps=[PlanStep(step_id="a", title="A")]) for _ in range(20)],
        RunCompleted(partial=True, missing=["a: thin"]),
    ]
    batched, single = [new_id("run") for _ in range(3)], new_id("run")
    for run_id in [*batched, single]:
        for payload in payloads:
            await log.append(run_id, tid, payload)
    stored = [se for run_id in batched async for se in log.read(run_id)]
    deliveries = stored + random.Random(3).sample(stored, 25)  # redeliveries
    random.Random(11).shuffle(deliveries)
    archived: dict[str, set[int]] = {run_id: set() for run_id in batched}
    rng = random.Random(5)
    while deliveries:
        size = rng.randint(1, 40)
        batch, deliveries = deliveries[:size], deliveries[size:]
        await archive_batch(pool, [(se.event, se.raw, se.stream_seq) for se in batch])
        for se in batch:
            archived[se.event.run_id].add(se.event.seq)
        for run_id, seqs in archived.items():
            end = 0
            while end + 1 in seqs:
                end += 1
            got = await pool.fetchval("SELECT last_seq FROM runs WHERE id=$1", run_id)
            assert (got or 0) == end, (run_id, got, end)
    async for se in log.read(single):
        await archive_event(pool, se.raw, se.stream_seq)
    expected = dict(await pool.fetchrow(READ_MODEL, single))
    assert expected["status"] == "completed" and expected["last_seq"] == len(payloads)
    assert (expected["source_count"], float(expected["spent_usd"])) == (3, 0.5)
    for run_id in batched:
        assert dict(await pool.fetchrow(READ_MODEL, run_id)) == expected


async def test_an_event_for_an_unknown_tenant_is_archived_not_projected(js, pool):
    run_id = new_id("run")
    log = EventLog(js, "w")
    ev = await log.append(run_id, "no-such-tenant", RunCreated(question="q"))
    se = await log.first(run_id)
    await archive_event(pool, se.raw, se.stream_seq)
    assert await pool.fetchval("SELECT count(*) FROM run_events WHERE id=$1", ev.id) == 1
    assert await pool.fetchval("SELECT count(*) FROM runs WHERE id=$1", run_id) == 0


async def test_the_stream_sequence_read_from_a_reply_is_what_the_metadata_says(js):
    """`bus.stream_seq` reads only the stream sequence from a delivered message's reply
    subject: the same number as nats-py's full metadata, in both reply forms."""
    from nats.aio.msg import Msg
    from runloom.runtime.bus import stream_seq

    run_id = new_id("run")
    log = EventLog(js, "w")
    for i in range(3):
        await log.append(run_id, "t", SourceFound(source_id=f"s{i}", title="t", passage="p"))
    sub = await js.subscribe(f"run.{run_id}.events", ordered_consumer=True)
    try:
        for _ in range(3):
            msg = await sub.next_msg(timeout=5)
            assert stream_seq(msg) == msg.metadata.sequence.stream > 0
    finally:
        await sub.unsubscribe()
    for reply in (
        "$JS.ACK.RUN_EVENTS.archive.1.4242.17.1795778636812345678.0",
        "$JS.ACK.hub.ACCHASH.RUN_EVENTS.archive.1.4242.17.1795778636812345678.0.r4nd0m",
    ):
        msg = Msg(None, subject="x", reply=reply)  # type: ignore[arg-type]
        assert stream_seq(msg) == msg.metadata.sequence.stream == 4242


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


async def test_a_stalled_mark_shows_until_the_run_goes_past_it_and_never_on_an_ended_run(js, pool):
    tid = await tenant(pool)
    run_id = new_id("run")
    log = EventLog(js, "w")

    async def archived(payload) -> None:
        await log.append(run_id, tid, payload)
        for se in [se async for se in log.read(run_id)]:
            await archive_event(pool, se.raw, se.stream_seq)

    async def shown():
        row = await pool.fetchrow(f"SELECT {RUN_COLUMNS} FROM runs WHERE id=$1", run_id)
        return run_view(row)["stalled"]

    def mark(after_seq: int) -> RunStalledRequest:
        return RunStalledRequest(
            run_id=run_id,
            tenant_id=tid,
            reason="event_store_full",
            detail="full",
            retry_at=datetime.now(UTC) + timedelta(seconds=4),
            after_seq=after_seq,
        )

    await archived(RunCreated(question="How do ordered consumers work?"))
    assert await shown() is None
    assert (await mark_stalled(pool, mark(1))).shown
    assert (await shown())["reason"] == "event_store_full"
    await archived(RunStarted(worker="w1"))  # the next event stored: the run went on
    assert await shown() is None
    assert not (await mark_stalled(pool, mark(1))).shown  # a late word of a pause past
    assert await shown() is None
    assert (await mark_stalled(pool, mark(2))).shown
    await archived(RunCompleted())
    assert await shown() is None
    assert not (await mark_stalled(pool, mark(3))).shown  # an ended run is never paused
