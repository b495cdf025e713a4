"""Fair dispatch: runs wait in their tenant's queue and start weighted round-robin across
tenants, cluster-wide, each handed out once.

    cmd.run.start / cmd.run.resume --admit--> run_queue (waiting)
        --dispatcher--> cmd.drive.run --drive consumer--> RunDriver --> row released

- **Admit** (durable `orchestrator`, `cmd.run.>`): a start or resume command becomes a waiting
  row of `run_queue`; the start command's dispatch policy (the tenant's concurrent runs and
  weight, from its quotas at the gateway) is kept in `tenant_dispatch`. Acked at once, so a
  backlog of one tenant never stands in front of another's commands.
- **Dispatch** (any replica; one at a time, under a transaction-scoped advisory lock): while
  the platform has a free slot (the live replicas' slots in `dispatch_slots`, less the rows
  handed out), pick among tenants with a waiting run and room under their concurrent runs the
  one holding the fewest slots for its weight, then the one with the smallest virtual time
  (stride scheduling: each dispatch adds 1/weight; a tenant back from idle starts at the
  clock, not with banked credit), take its oldest waiting run,
  publish `cmd.drive.run` with a message id per dispatch (`drive-<the queuing command's
  id>-<n>`), mark the row handed out, commit.
- **Drive** (durable `orchestrator-drive`, `cmd.drive.>`): as before the queue, the owner
  holds the run's lock and keeps the message alive; when the run ends or pauses its row goes,
  freeing the slot (a resume that came meanwhile queues it again).

Exactly once: a dispatcher SIGKILLed after its publish and before its commit leaves the row
waiting and its lock dies with its connection; the next dispatcher publishes the same message
id again, which JetStream drops as a duplicate (within its window; past it, the run's lock and
its stored events make a second delivery find the run started or ended). A replica killed
while working on a run is the existing takeover: the drive message is redelivered.

While a run waits, `run.queued` says where (its place in its tenant's queue) and why
(`tenant_concurrency`: the tenant's runs fill its share; `platform_busy`: every slot is
taken), written again when the reason changes or the place has halved. It is written under
the row's lock while the row still waits, so it always precedes the run's `run.started`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from nats.js.errors import NotFoundError
from opentelemetry import context as otel_context
from runloom.contracts import subjects
from runloom.contracts.commands import DispatchPolicy, DriveRun, ResumeRun, StartRun
from runloom.contracts.events import TERMINAL_TYPES, RunQueued, decode_event
from runloom.contracts.kinds import QueueReason
from runloom.orchestrator import metrics
from runloom.runtime import bus
from runloom.runtime.eventlog import EventLog, RunClosed
from runloom.runtime.telemetry import context_from_traceparent, current_traceparent

log = logging.getLogger(__name__)

DISPATCH_LOCK = 0x52554E44  # "RUND"
ANNOUNCE_LOCK = 0x52554E51  # "RUNQ"
BATCH = 64
"""Most runs handed out by one dispatch transaction."""
SLOTS_TTL_S = 10.0
"""A replica whose slots were not renewed for this long no longer counts as capacity."""
ANNOUNCE_AFTER_S = 0.5
"""A run waits this long before `run.queued` is written (most runs start sooner)."""
ANNOUNCE_BATCH = 200
REAP_EVERY_S = 15.0
REAP_AFTER_S = 60.0
"""A run handed out this long ago whose log has ended no longer holds a slot."""


@dataclass
class _Tenant:
    running: int
    waiting: int
    limit: int
    weight: float
    pass_: float
    picked: int = 0


def pick(tenants: dict[str, _Tenant], free: int, clock: float) -> tuple[list[str], float]:
    """Weighted round-robin: the tenants whose runs start next, in order, for `free` slots.

    Pure (it updates the given tenants' counters and virtual times). Among tenants with a
    waiting run and room under their limit, the one holding the fewest slots for its weight
    goes next (a tenant arriving while another fills the platform gets the slots that free up
    until it holds its share), then the one whose virtual time (at least the clock) is
    smallest; each pick moves the tenant on by 1/weight. With backlogs on both sides this
    alternates by weight. Returns the picks and the new clock."""
    picks: list[str] = []
    while free > 0 and len(picks) < BATCH:
        eligible = [
            (t.running / t.weight, max(t.pass_, clock), tid)
            for tid, t in tenants.items()
            if t.waiting and t.running < t.limit
        ]
        if not eligible:
            break
        _, start, tid = min(eligible)
        t = tenants[tid]
        t.pass_ = start + 1.0 / t.weight
        clock = max(clock, start)
        t.running += 1
        t.waiting -= 1
        t.picked += 1
        free -= 1
        picks.append(tid)
    return picks, clock


@dataclass
class Dispatcher:
    pool: asyncpg.Pool
    js: Any
    log: EventLog
    worker: str
    slots: int
    fifo: bool = False
    """Oldest first whoever's it is (the order before fair dispatch, for comparison)."""
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    # -- admission and release (called by the consumers) ---------------------------------------

    async def admit(self, cmd: StartRun | ResumeRun) -> None:
        """Queue the run of a start or resume command (once: a redelivery changes nothing)."""
        async with self.pool.acquire() as conn, conn.transaction():
            if isinstance(cmd, StartRun):
                policy = cmd.dispatch or DispatchPolicy()
                await conn.execute(
                    "INSERT INTO tenant_dispatch(tenant_id, concurrent_runs, weight)"
                    " VALUES ($1, $2, $3) ON CONFLICT (tenant_id) DO UPDATE SET"
                    " concurrent_runs=EXCLUDED.concurrent_runs, weight=EXCLUDED.weight",
                    cmd.tenant_id,
                    max(1, policy.concurrent_runs),
                    policy.weight if policy.weight > 0 else 1.0,
                )
            else:
                await conn.execute(
                    "INSERT INTO tenant_dispatch(tenant_id, concurrent_runs, weight)"
                    " VALUES ($1, $2, $3) ON CONFLICT (tenant_id) DO NOTHING",
                    cmd.tenant_id,
                    DispatchPolicy().concurrent_runs,
                    DispatchPolicy().weight,
                )
            # A resume for a run that holds its slot (it is still pausing): queue it again
            # when that drive ends.
            requeue = "$4 AND run_queue.dispatched_at IS NOT NULL"
            await conn.execute(
                "INSERT INTO run_queue(run_id, tenant_id, command_id, trace)"
                " VALUES ($1, $2, $3, $5) ON CONFLICT (run_id) DO UPDATE SET"
                f" again = run_queue.again OR ({requeue}),"
                f" command_id = CASE WHEN {requeue} THEN EXCLUDED.command_id"
                " ELSE run_queue.command_id END,"
                f" trace = CASE WHEN {requeue} THEN EXCLUDED.trace ELSE run_queue.trace END",
                cmd.run_id,
                cmd.tenant_id,
                cmd.command_id,
                isinstance(cmd, ResumeRun),
                current_traceparent(),
            )
        self.wake.set()

    async def release(self, run_id: str) -> None:
        """The run's drive ended (run ended or paused): its slot is free."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("DELETE FROM run_queue WHERE run_id=$1 AND NOT again", run_id)
            await conn.execute(
                "UPDATE run_queue SET dispatched_at=NULL, again=false, dispatches=0,"
                " told_position=NULL, told_reason=NULL, enqueued_at=clock_timestamp()"
                " WHERE run_id=$1 AND again",
                run_id,
            )
        self.wake.set()

    # -- the loops ---------------------------------------------------------------------------

    async def serve(self, stop: asyncio.Event) -> None:
        """Renew this replica's slots, dispatch and announce until `stop`."""
        tasks = [
            asyncio.create_task(self._every(stop, 2.0, self._renew_slots)),
            asyncio.create_task(self._dispatch_loop(stop)),
            asyncio.create_task(self._every(stop, 1.0, self.announce)),
            asyncio.create_task(self._every(stop, REAP_EVERY_S, self.reap)),
        ]
        try:
            await stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            with contextlib.suppress(Exception):
                await self.pool.execute("DELETE FROM dispatch_slots WHERE worker=$1", self.worker)

    async def _every(
        self, stop: asyncio.Event, interval: float, work: Callable[[], Awaitable[Any]]
    ) -> None:
        while not stop.is_set():
            try:
                await work()
            except Exception as exc:  # the database or the bus away: again next time
                log.warning("dispatch %s: %r; retrying", getattr(work, "__name__", work), exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)

    async def _renew_slots(self) -> None:
        await self.pool.execute(
            "INSERT INTO dispatch_slots(worker, slots, seen_at) VALUES ($1, $2, now())"
            " ON CONFLICT (worker) DO UPDATE SET slots=EXCLUDED.slots, seen_at=now()",
            self.worker,
            self.slots,
        )
        self.wake.set()

    async def _dispatch_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), 0.5)  # others' changes: polled
            self.wake.clear()
            try:
                while await self.dispatch() >= BATCH:
                    pass  # a full batch: more may be waiting
            except Exception as exc:
                log.warning("dispatch: %r; retrying", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.5)

    async def dispatch(self) -> int:
        """One dispatch transaction; the number of runs handed out (0: nothing to do, no room,
        or another replica is dispatching, which then also sees what we were woken for)."""
        for _ in range(3):
            async with self.pool.acquire() as conn, conn.transaction():
                if await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", DISPATCH_LOCK):
                    return await self._dispatch(conn)
            await asyncio.sleep(0.05)
        return 0

    async def _dispatch(self, conn: asyncpg.Connection) -> int:
        capacity = await conn.fetchval(
            "SELECT coalesce(sum(slots), 0) FROM dispatch_slots"
            " WHERE seen_at > now() - make_interval(secs => $1)",
            SLOTS_TTL_S,
        )
        rows = await conn.fetch(
            "SELECT q.tenant_id, count(*) FILTER (WHERE q.dispatched_at IS NOT NULL) AS running,"
            " count(*) FILTER (WHERE q.dispatched_at IS NULL) AS waiting,"
            " coalesce(d.concurrent_runs, $1) AS lim, coalesce(d.weight, 1.0) AS weight,"
            " coalesce(d.pass, 0) AS pass"
            " FROM run_queue q LEFT JOIN tenant_dispatch d USING (tenant_id)"
            " GROUP BY q.tenant_id, d.concurrent_runs, d.weight, d.pass",
            DispatchPolicy().concurrent_runs,
        )
        tenants = {
            r["tenant_id"]: _Tenant(r["running"], r["waiting"], r["lim"], r["weight"], r["pass"])
            for r in rows
        }
        free = int(capacity) - sum(t.running for t in tenants.values())
        if free <= 0 or not any(t.waiting for t in tenants.values()):
            return 0
        if self.fifo:  # the order before fair dispatch: oldest first, whoever's it is
            return await self._hand_out(
                conn,
                list(
                    await conn.fetch(
                        f"{_WAITING} ORDER BY enqueued_at, run_id LIMIT $1 FOR UPDATE",
                        min(free, BATCH),
                    )
                ),
            )
        clock = await conn.fetchval("SELECT clock FROM dispatch_clock")
        picks, clock = pick(tenants, free, float(clock))
        if not picks:
            return 0
        runs: dict[str, list[asyncpg.Record]] = {}
        for tid, t in tenants.items():
            if t.picked:
                runs[tid] = list(
                    await conn.fetch(
                        f"{_WAITING} AND tenant_id=$1 ORDER BY enqueued_at, run_id LIMIT $2"
                        " FOR UPDATE",
                        tid,
                        t.picked,
                    )
                )
        handed = await self._hand_out(conn, [runs[tid].pop(0) for tid in picks if runs.get(tid)])
        await conn.executemany(
            "UPDATE tenant_dispatch SET pass=$2 WHERE tenant_id=$1",
            [(tid, t.pass_) for tid, t in tenants.items() if t.picked],
        )
        await conn.execute("UPDATE dispatch_clock SET clock=$1", clock)
        return handed

    async def _hand_out(self, conn: asyncpg.Connection, rows: list[asyncpg.Record]) -> int:
        """Publish each run's drive command, in order, and mark it handed out (committed by
        the caller's transaction after every publish)."""
        for row in rows:
            n = row["dispatches"] + 1
            command_id = f"drive-{row['command_id']}-{n}"  # the same on a re-dispatch
            # Published in the trace of the command that queued the run: the run stays one trace.
            token = otel_context.attach(context_from_traceparent(row["trace"]))
            try:
                await bus.publish(
                    self.js,
                    subjects.DRIVE_RUN,
                    DriveRun(
                        command_id=command_id,
                        run_id=row["run_id"],
                        tenant_id=row["tenant_id"],
                        causation_id=row["command_id"],
                    ),
                    msg_id=command_id,
                )
            finally:
                otel_context.detach(token)
            await conn.execute(
                "UPDATE run_queue SET dispatched_at=clock_timestamp(), dispatches=$2"
                " WHERE run_id=$1",
                row["run_id"],
                n,
            )
            metrics.DISPATCH_WAIT.labels(row["tenant_id"]).observe(float(row["waited"]))
        return len(rows)

    async def reap(self) -> int:
        """Free the slots of runs handed out long ago that have ended without their drive
        saying so (e.g. a drive command set apart as poison); returns how many."""
        rows = await self.pool.fetch(
            "SELECT run_id FROM run_queue WHERE dispatched_at < now() - make_interval(secs => $1)"
            " ORDER BY dispatched_at LIMIT 100",
            REAP_AFTER_S,
        )
        freed = 0
        for row in rows:
            try:
                msg = await self.js.get_last_msg(
                    subjects.RUN_EVENTS_STREAM, subjects.run_events(row["run_id"])
                )
            except NotFoundError:  # no event at all (or long gone): nothing to run
                ended = True
            else:
                ended = decode_event(msg.data).type in TERMINAL_TYPES
            if ended:
                await self.pool.execute(
                    "DELETE FROM run_queue WHERE run_id=$1 AND dispatched_at IS NOT NULL",
                    row["run_id"],
                )
                freed += 1
        if freed:
            log.warning("freed %d slots of runs that ended without their drive saying so", freed)
            self.wake.set()
        return freed

    # -- run.queued ------------------------------------------------------------------------------

    async def announce(self) -> int:
        """Write `run.queued` for waiting runs whose place or reason is news; one replica at a
        time. Returns how many were written."""
        async with self.pool.acquire() as conn, conn.transaction():
            if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", ANNOUNCE_LOCK):
                return 0
            rows = await conn.fetch(
                _NEWS, ANNOUNCE_AFTER_S, ANNOUNCE_BATCH, DispatchPolicy().concurrent_runs
            )
        written = 0
        for r in rows:
            reason: QueueReason = (
                "tenant_concurrency" if r["running"] >= r["lim"] else "platform_busy"
            )
            if await self._announce(r, reason):
                written += 1
        return written

    async def _announce(self, r: asyncpg.Record, reason: QueueReason) -> bool:
        run_id, position = r["run_id"], int(r["position"])
        async with self.pool.acquire() as conn, conn.transaction():
            still = await conn.fetchval(
                "SELECT 1 FROM run_queue WHERE run_id=$1 AND dispatched_at IS NULL"
                " AND dispatches=$2 FOR UPDATE",
                run_id,
                r["dispatches"],
            )
            if not still:
                return False  # handed out meanwhile
            try:
                await self.log.append(
                    run_id,
                    r["tenant_id"],
                    RunQueued(
                        position=position,
                        reason=reason,
                        running=int(r["running"]),
                        limit=int(r["lim"]),
                    ),
                    event_id=f"{run_id}:queued:{r['command_id']}:{position}:{reason}",
                    causation_id=r["command_id"],
                )
            except RunClosed:  # cancelled (or ended) while it waited: it needs no slot
                await conn.execute("DELETE FROM run_queue WHERE run_id=$1", run_id)
                return False
            finally:
                self.log.forget(run_id)
            await conn.execute(
                "UPDATE run_queue SET told_position=$2, told_reason=$3 WHERE run_id=$1",
                run_id,
                position,
                reason,
            )
        return True


_WAITING = (
    "SELECT run_id, tenant_id, command_id, dispatches, trace,"
    " extract(epoch FROM clock_timestamp() - enqueued_at) AS waited"
    " FROM run_queue WHERE dispatched_at IS NULL"
)

_NEWS = """
WITH waiting AS (
    SELECT q.run_id, q.tenant_id, q.command_id, q.dispatches, q.enqueued_at,
           q.told_position, q.told_reason,
           row_number() OVER (PARTITION BY q.tenant_id ORDER BY q.enqueued_at, q.run_id)
               AS position
    FROM run_queue q WHERE q.dispatched_at IS NULL
), running AS (
    SELECT tenant_id, count(*) AS running FROM run_queue
    WHERE dispatched_at IS NOT NULL GROUP BY tenant_id
)
SELECT w.*, coalesce(r.running, 0) AS running, coalesce(d.concurrent_runs, $3) AS lim
FROM waiting w
LEFT JOIN running r USING (tenant_id)
LEFT JOIN tenant_dispatch d USING (tenant_id)
WHERE w.enqueued_at < clock_timestamp() - make_interval(secs => $1)
  AND (w.told_position IS NULL
       OR w.told_reason IS DISTINCT FROM
          CASE WHEN coalesce(r.running, 0) >= coalesce(d.concurrent_runs, $3)
               THEN 'tenant_concurrency' ELSE 'platform_busy' END
       OR w.position * 2 <= w.told_position)
ORDER BY w.position, w.enqueued_at
LIMIT $2
"""


async def depth_gauges(pool: asyncpg.Pool) -> None:
    """Scrape hook: each tenant's waiting runs and the oldest one's wait (cluster-wide, the
    same from every replica: alert on `max by (tenant)`)."""
    rows = await pool.fetch(
        "SELECT tenant_id, count(*) AS waiting,"
        " extract(epoch FROM clock_timestamp() - min(enqueued_at)) AS oldest"
        " FROM run_queue WHERE dispatched_at IS NULL GROUP BY tenant_id"
    )
    metrics.QUEUE_DEPTH.clear()
    metrics.QUEUE_OLDEST.clear()
    for r in rows:
        metrics.QUEUE_DEPTH.labels(r["tenant_id"]).set(r["waiting"])
        metrics.QUEUE_OLDEST.labels(r["tenant_id"]).set(float(r["oldest"]))
