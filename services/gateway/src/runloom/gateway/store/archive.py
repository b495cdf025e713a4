"""The event archive: every run event copied into Postgres, and the `runs` read model.

`run_archiver` serves the archive's declared consumer (`consumer`), shared by all gateway
replicas. For each event it (1) inserts the stored bytes into `run_events` keyed by
(run_id, seq) (a second copy is a no-op) and (2) advances the run's read model over the
contiguous archived events after the row's `last_seq`, under the row's lock. Redelivery,
out-of-order delivery and concurrent handlers all end in the same row. In the same transaction
a `deliverable.*` event advances the deliverables read model (`deliverable_view`).

`PgArchive` answers the event log's questions about runs whose messages the hot window
already dropped, and serves history to the gateway.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg
import msgspec
from nats.js import JetStreamContext
from runloom.contracts import subjects
from runloom.contracts.commands import RunStalledReply, RunStalledRequest
from runloom.contracts.events import TERMINAL_TYPES, Event, decode_event
from runloom.contracts.kinds import DEFAULT_SKILL
from runloom.gateway._titles import title_of
from runloom.gateway.access import ARCHIVE_DURABLE
from runloom.gateway.store import deliverable_view
from runloom.runtime.bus import PoisonMessage, stream_seq
from runloom.runtime.consumer import Consumer, Delivery, serve
from runloom.runtime.eventlog import EventLog
from runloom.runtime.runstate import TERMINAL_STATUS

log = logging.getLogger(__name__)

DURABLE = ARCHIVE_DURABLE
PROJECT_BATCH = 500
LINGER_S = 0.05
"""How long the archive waits after a short batch before fetching again."""


@dataclass(frozen=True)
class ArchivedEvent:
    seq: int
    stream_seq: int | None
    raw: bytes


class PgArchive:
    """Read side of `run_events` (implements `eventlog.Archive`)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def last(self, run_id: str) -> Event | None:
        raw = await self.pool.fetchval(
            "SELECT raw FROM run_events WHERE run_id=$1 ORDER BY seq DESC LIMIT 1", run_id
        )
        return None if raw is None else decode_event(bytes(raw))

    async def find(self, run_id: str, event_id: str) -> Event | None:
        raw = await self.pool.fetchval(
            "SELECT raw FROM run_events WHERE id=$1 AND run_id=$2", event_id, run_id
        )
        return None if raw is None else decode_event(bytes(raw))

    async def max_stream_seq(self, run_id: str) -> int:
        value = await self.pool.fetchval(
            "SELECT max(stream_seq) FROM run_events WHERE run_id=$1", run_id
        )
        return int(value or 0)

    async def read(
        self, run_id: str, *, after_seq: int = 0, before_seq: int | None = None, limit: int = 1000
    ) -> list[ArchivedEvent]:
        """Archived events with after_seq < seq < before_seq, in order (at most `limit`)."""
        rows = await self.pool.fetch(
            "SELECT seq, stream_seq, raw FROM run_events WHERE run_id=$1 AND seq > $2"
            " AND ($3::int IS NULL OR seq < $3) ORDER BY seq LIMIT $4",
            run_id,
            after_seq,
            before_seq,
            limit,
        )
        return [ArchivedEvent(r["seq"], r["stream_seq"], bytes(r["raw"])) for r in rows]


# -- writing ---------------------------------------------------------------------------------


async def archive_event(pool: asyncpg.Pool, raw: bytes, stream_seq: int | None) -> Event:
    """Store one event and advance its run's read model; idempotent."""
    try:
        ev = decode_event(raw)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise PoisonMessage(f"not a run event: {exc}") from exc
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO run_events(run_id, seq, id, tenant_id, type, stream_seq, raw, time)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
            ev.run_id,
            ev.seq,
            ev.id,
            ev.tenant_id,
            ev.type,
            stream_seq,
            raw,
            ev.time,
        )
        await deliverable_view.apply(conn, ev)
        await project(conn, ev.run_id, {ev.seq: ev})
    return ev


async def archive_batch(pool: asyncpg.Pool, items: list[tuple[Event, bytes, int | None]]) -> None:
    """Store many events in one transaction and advance each of their runs once; idempotent."""
    if not items:
        return
    async with pool.acquire() as conn, conn.transaction():
        await conn.executemany(
            "INSERT INTO run_events(run_id, seq, id, tenant_id, type, stream_seq, raw, time)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
            [
                (ev.run_id, ev.seq, ev.id, ev.tenant_id, ev.type, seq, raw, ev.time)
                for ev, raw, seq in items
            ],
        )
        by_run: dict[str, dict[int, Event]] = {}
        for ev, _, _ in items:
            await deliverable_view.apply(conn, ev)
            by_run.setdefault(ev.run_id, {})[ev.seq] = ev
        await _project_known(conn, by_run)


async def _project_known(conn: asyncpg.Connection, by_run: dict[str, dict[int, Event]]) -> None:
    """Advance the read model of every run of a batch over its events just archived, in two
    round trips for the lot: one query locks their rows (in id order, as `project` takes them
    one by one: no deadlock) and says how far each run is archived; one statement writes every
    advanced row. A run these events do not take to its archived end (they close a gap, or
    its row is not made yet) goes the general way, `project`, which reads the rest back."""
    ids = sorted(by_run)
    rows = {r["id"]: r for r in await conn.fetch(_LOCK_RUNS, ids)}
    updates: list[tuple[Any, ...]] = []
    rest: list[str] = []
    for run_id in ids:
        row = rows.get(run_id)
        if row is None:
            rest.append(run_id)
            continue
        m = dict(row)
        archived_to = m.pop("archived_to") or 0
        recount: set[str] = set()
        known = by_run[run_id]
        while m["terminal_type"] is None and (ev := known.get(m["last_seq"] + 1)) is not None:
            _apply(m, ev, recount)
        if m["terminal_type"] is None and m["last_seq"] < archived_to:
            rest.append(run_id)
        elif m["last_seq"] != row["last_seq"]:
            if recount:
                await _recount(conn, run_id, m, recount)
            updates.append(_row_values(run_id, m))
    if updates:
        await conn.executemany(_UPDATE_RUN, updates)
    for run_id in rest:
        await project(conn, run_id, by_run[run_id])


async def project(
    conn: asyncpg.Connection, run_id: str, known: dict[int, Event] | None = None
) -> None:
    """Advance the run's read model over the contiguous archived events after its last_seq.

    `known`: events of the run just archived in this transaction, by seq; those are applied as
    they are instead of being read back (the rest are read from `run_events`)."""
    while await _project_some(conn, run_id, known or {}):
        pass


async def _project_some(conn: asyncpg.Connection, run_id: str, known: dict[int, Event]) -> bool:
    """One step of `project`; True if a full batch was applied (there may be more)."""
    row = await conn.fetchrow("SELECT * FROM runs WHERE id=$1 FOR UPDATE", run_id)
    if row is None:
        row = await _create_row(conn, run_id)
        if row is None:
            return False
    m = dict(row)
    recount: set[str] = set()
    applied = 0
    while applied < PROJECT_BATCH and m["terminal_type"] is None:
        ev = known.get(m["last_seq"] + 1)
        if ev is None:
            break
        _apply(m, ev, recount)
        applied += 1
    rows = []
    if applied < PROJECT_BATCH and m["terminal_type"] is None:
        rows = await conn.fetch(
            "SELECT seq, raw FROM run_events WHERE run_id=$1 AND seq > $2 ORDER BY seq LIMIT $3",
            run_id,
            m["last_seq"],
            PROJECT_BATCH - applied,
        )
    for r in rows:
        if r["seq"] != m["last_seq"] + 1 or m["terminal_type"] is not None:
            break  # a gap (its event is not archived yet) or past the end: wait for it
        _apply(m, decode_event(bytes(r["raw"])), recount)
    if m["last_seq"] == row["last_seq"]:
        return False
    if recount:
        await _recount(conn, run_id, m, recount)
    await conn.execute(_UPDATE_RUN, *_row_values(run_id, m))
    return m["last_seq"] - row["last_seq"] == PROJECT_BATCH


_LOCK_RUNS = (
    "SELECT r.*, (SELECT max(e.seq) FROM run_events e WHERE e.run_id = r.id) AS archived_to"
    " FROM runs r WHERE r.id = ANY($1::text[]) ORDER BY r.id FOR UPDATE OF r"
)
"""The rows of some runs, locked in id order, with the highest seq archived of each."""

_UPDATE_RUN = (
    "UPDATE runs SET status=$2, title=$3, last_seq=$4, event_count=$5, source_count=$6,"
    " step_count=$7, spent_usd=$8, partial=$9, error=$10, started_at=$11, ended_at=$12,"
    " cancel_requested=$13, missing=$14, terminal_type=$15, started_count=$16,"
    " updated_at=now() WHERE id=$1"
)
_UPDATED = (
    "status title last_seq event_count source_count step_count spent_usd partial error"
    " started_at ended_at cancel_requested missing terminal_type started_count"
).split()


_INSERT_RUN = (
    "INSERT INTO runs(id, tenant_id, question, title, skill, budget_usd, options,"
    " idempotency_key, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, coalesce($9, now()))"
    " ON CONFLICT (id) DO NOTHING"
)


async def insert_run(
    db: asyncpg.Pool | asyncpg.Connection,
    run_id: str,
    tenant_id: str,
    created: dict[str, Any],
    *,
    created_at: datetime | None = None,
    returning: str = "id",
) -> asyncpg.Record | None:
    """Insert a run's row from its `run.created` data (None if the row was there already).

    The one statement that creates a `runs` row: the create route calls it once `run.created`
    is stored, the projection when it meets a `run.created` whose row is missing. Whichever
    comes first makes the row; both make the same one."""
    return await db.fetchrow(  # type: ignore[no-any-return]
        f"{_INSERT_RUN} RETURNING {returning}",
        run_id,
        tenant_id,
        _pg_safe(created.get("question") or ""),
        _pg_safe(title_of(created)),
        _pg_safe(created.get("skill") or DEFAULT_SKILL),
        created.get("budget_usd"),
        _pg_safe(created.get("options") or {}),
        _pg_safe(created.get("idempotency_key")),
        created_at,
    )


async def run_budget(
    db: asyncpg.Pool | asyncpg.Connection, tenant_id: str, run_id: str
) -> tuple[bool, float | None]:
    """(whether the tenant has the run, its budget in USD if it set one)."""
    row = await db.fetchrow(
        "SELECT budget_usd FROM runs WHERE id=$1 AND tenant_id=$2", run_id, tenant_id
    )
    if row is None:
        return False, None
    budget = row["budget_usd"]
    return True, None if budget is None else float(budget)


def _row_values(run_id: str, m: dict[str, Any]) -> tuple[Any, ...]:
    """`_UPDATE_RUN`'s arguments for a run's advanced row."""
    return (run_id, *(m[k] for k in _UPDATED))


async def _create_row(conn: asyncpg.Connection, run_id: str) -> asyncpg.Record | None:
    """The row of a run that was not created through the gateway (its run.created archived)."""
    raw = await conn.fetchval("SELECT raw FROM run_events WHERE run_id=$1 AND seq=1", run_id)
    if raw is None:
        return None
    ev = decode_event(bytes(raw))
    if ev.type != "run.created":
        return None
    try:
        async with conn.transaction():  # a savepoint: an unknown tenant must not abort the rest
            await insert_run(conn, run_id, ev.tenant_id, ev.data, created_at=ev.time)
    except asyncpg.ForeignKeyViolationError:
        log.warning("run %s names unknown tenant %s: archived, not projected", run_id, ev.tenant_id)
        return None
    return await conn.fetchrow("SELECT * FROM runs WHERE id=$1 FOR UPDATE", run_id)


async def _recount(
    conn: asyncpg.Connection, run_id: str, m: dict[str, Any], recount: set[str]
) -> None:
    """Distinct sources found, and the usage spent (each usage id once), up to last_seq."""
    types = [
        t for t, k in (("source.found", "sources"), ("usage.recorded", "spent")) if k in recount
    ]
    rows = await conn.fetch(
        "SELECT type, id, raw FROM run_events WHERE run_id=$1 AND type = ANY($2::text[])"
        " AND seq <= $3 ORDER BY seq",
        run_id,
        types,
        m["last_seq"],
    )
    sources: set[Any] = set()
    costs: dict[Any, Decimal] = {}
    for r in rows:
        data = decode_event(bytes(r["raw"])).data
        if r["type"] == "source.found":
            sources.add(data.get("source_id"))
        else:
            cost = data.get("cost_usd")
            costs.setdefault(
                data.get("usage_id") or r["id"], Decimal(repr(cost)) if cost is not None else _0
            )
    if "sources" in recount:
        m["source_count"] = len(sources)
    if "spent" in recount:
        m["spent_usd"] = sum(costs.values(), _0)


_0 = Decimal(0)


def _pg_safe(value: Any) -> Any:
    """Text and JSON as PostgreSQL can hold them: NUL and lone surrogates (which text and jsonb
    refuse) become U+FFFD. The archive keeps the exact bytes; only the read model's copy is
    changed, so one event cannot keep its run's row from advancing."""
    if isinstance(value, str):
        return _UNSTORABLE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {_pg_safe(k): _pg_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_pg_safe(v) for v in value]
    return value


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _apply(m: dict[str, Any], ev: Event, recount: set[str]) -> None:
    m["last_seq"] = ev.seq
    m["event_count"] += 1
    d, t = ev.data, ev.type
    if t == "run.created":
        m["title"] = m["title"] or _pg_safe(title_of(d))
    elif t == "run.queued":
        if m["status"] in ("created", "running"):
            m["status"] = "queued"
    elif t == "run.started":
        m["started_count"] += 1
        m["started_at"] = m["started_at"] or ev.time
        if m["status"] in ("created", "queued"):
            m["status"] = "running"
    elif t in ("plan.proposed", "plan.revised"):
        m["step_count"] = len(d.get("steps") or [])
        if m["status"] in ("created", "queued"):
            m["status"] = "running"
    elif t == "step.started":
        if m["status"] in ("created", "queued"):
            m["status"] = "running"
    elif t == "source.found":
        recount.add("sources")
    elif t == "usage.recorded":
        recount.add("spent")
    elif t == "clarification.requested":
        m["status"] = "waiting_clarification"
    elif t == "clarification.answered":
        if m["status"] == "waiting_clarification":
            m["status"] = "running" if m["started_count"] else "created"
    elif t == "cancel.requested":
        m["cancel_requested"] = True
    if t in TERMINAL_TYPES:
        m["status"] = TERMINAL_STATUS[t]
        m["terminal_type"] = t
        m["ended_at"] = ev.time
        if t == "run.completed":
            m["partial"] = bool(d.get("partial"))
            m["missing"] = _pg_safe(list(d.get("missing") or []))
        elif t == "run.failed":
            m["error"] = _pg_safe(d.get("error"))
        elif t == "run.cancelled":
            m["error"] = _pg_safe(d.get("reason"))
        elif t == "run.budget_stopped":
            m["error"] = _pg_safe(
                f"{d.get('scope', 'run')} budget of ${d.get('budget_usd')} reached "
                f"(spent ${d.get('spent_usd')})"
            )


# -- the consumer ----------------------------------------------------------------------------


def consumer(pool: asyncpg.Pool, *, batch: int = 256) -> Consumer[Event]:
    """The archive's declaration: every run event, in batches, one transaction per batch."""

    async def apply(items: Sequence[tuple[Event, Delivery]]) -> None:
        await archive_batch(pool, [(ev, bytes(d.msg.data), stream_seq(d.msg)) for ev, d in items])

    return Consumer(
        stream=subjects.RUN_EVENTS_STREAM,
        durable=DURABLE,
        filter_subject=subjects.RUN_EVENTS_SUBJECTS,
        decodes=Event,
        batch_handler=apply,
        batch=batch,
        # The read model and the archive may trail by 50 ms (live streams never wait for
        # them): at 2,000 events/s a batch then holds ~100 events instead of ~12, about a
        # fifth of the gateway's CPU per event archived.
        linger_s=LINGER_S,
        ack_wait_s=30.0,
    )


async def run_archiver(
    js: JetStreamContext,
    pool: asyncpg.Pool,
    stop: asyncio.Event,
    *,
    events: EventLog | None = None,
    batch: int = 256,
) -> None:
    """Archive every run event, on the durable consumer shared by all gateway replicas.

    One transaction stores a batch and advances each run it touches once, then the batch is
    acked. A batch that fails is applied one event at a time: an event that cannot be stored
    is set apart (dead letter, and `run.failed` on its run through `events`), the rest go on.
    """
    await serve(consumer(pool, batch=batch), js, stop, events=events)


async def mark_stalled(pool: asyncpg.Pool, req: RunStalledRequest) -> RunStalledReply:
    """`runs.stalled`: show the run as paused (why, until when) while its read model is not
    past `after_seq`; `run_view` stops showing it once a later event is projected or the run
    ends, so the mark needs no clearing of its own."""
    status = await pool.execute(
        "UPDATE runs SET stalled_reason=$3, stalled_detail=$4, stalled_retry_at=$5,"
        " stalled_after_seq=$6 WHERE id=$1 AND tenant_id=$2 AND terminal_type IS NULL"
        " AND last_seq <= $6",
        req.run_id,
        req.tenant_id,
        req.reason,
        req.detail,
        req.retry_at,
        req.after_seq,
    )
    return RunStalledReply(shown=status.split()[-1] == "1")
