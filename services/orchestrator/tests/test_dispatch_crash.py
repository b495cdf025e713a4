"""A dispatcher that dies after its publish and before its commit: the run is handed out once."""

from __future__ import annotations

import uuid

import msgspec
from nats.js.errors import NotFoundError
from runloom.contracts import subjects
from runloom.contracts.commands import DispatchPolicy, DriveRun, StartRun
from runloom.orchestrator.dispatch import Dispatcher
from runloom.runtime.eventlog import EventLog

decode = msgspec.json.Decoder(DriveRun).decode


class Crash(Exception):
    pass


async def _last_seq(js) -> int:
    return int((await js.stream_info(subjects.COMMANDS_STREAM)).state.last_seq)


async def _drives_of(js, run_id: str, after_seq: int) -> int:
    """Drive commands for `run_id` stored after `after_seq` (whoever else wrote meanwhile)."""
    found = 0
    for seq in range(after_seq + 1, await _last_seq(js) + 1):
        try:
            msg = await js.get_msg(subjects.COMMANDS_STREAM, seq)
        except NotFoundError:
            continue
        if msg.subject == subjects.DRIVE_RUN and decode(msg.data).run_id == run_id:
            found += 1
    return found


async def test_a_dispatch_repeated_after_a_crash_before_commit_is_one_drive_command(js, pool):
    worker = f"test/{uuid.uuid4().hex[:6]}"
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    run_id = f"run_{uuid.uuid4().hex[:26].upper()}"
    first = Dispatcher(pool, js, EventLog(js, "orchestrator/a"), worker=worker, slots=1000)
    await pool.execute(
        "INSERT INTO dispatch_slots(worker, slots, seen_at) VALUES ($1, 1000, now())", worker
    )
    try:
        await first.admit(
            StartRun(
                command_id=f"start-{run_id}",
                run_id=run_id,
                tenant_id=tenant,
                dispatch=DispatchPolicy(concurrent_runs=1),
            )
        )
        before = await _last_seq(js)
        # The first dispatcher publishes, then dies before its commit (the transaction is lost).
        try:
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", 0x52554E44)
                assert await first._dispatch(conn) >= 1
                raise Crash
        except Crash:
            pass
        assert await _drives_of(js, run_id, before) == 1
        waiting = await pool.fetchval(
            "SELECT dispatched_at IS NULL FROM run_queue WHERE run_id=$1", run_id
        )
        assert waiting  # nothing committed: the run still waits
        # Another replica's dispatcher hands it out again: the same message id, dropped.
        second = Dispatcher(pool, js, EventLog(js, "orchestrator/b"), worker=worker, slots=1000)
        assert await second.dispatch() >= 1
        assert await pool.fetchval(
            "SELECT dispatched_at IS NOT NULL FROM run_queue WHERE run_id=$1", run_id
        )
        assert await _drives_of(js, run_id, before) == 1  # no second drive command for it
    finally:
        await pool.execute("DELETE FROM run_queue WHERE run_id=$1", run_id)
        await pool.execute("DELETE FROM dispatch_slots WHERE worker=$1", worker)
