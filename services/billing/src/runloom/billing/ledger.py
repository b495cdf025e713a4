"""The usage ledger: one row per `usage.recorded` event, keyed by the event id.

The billing service reads every run's events through one durable pull consumer (shared by all
replicas), skips other types by their `Runloom-Event-Type` header without decoding them, and
inserts a row per usage event with `ON CONFLICT DO NOTHING`: delivered twice, counted once.
`reconcile` checks the ledger against the committed reservations.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from decimal import Decimal

import asyncpg
import msgspec
from runloom.billing.access import LEDGER_DURABLE as CONSUMER
from runloom.contracts import subjects
from runloom.contracts.events import Event, UsageRecorded
from runloom.runtime.bus import PoisonMessage
from runloom.runtime.consumer import Consumer, Delivery

log = logging.getLogger(__name__)

USAGE_TYPE = "usage.recorded"


async def record(pool: asyncpg.Pool, event: Event, price_version: str | None = None) -> bool:
    """Write the ledger row of one usage.recorded event; False if it was already there."""
    if event.type != USAGE_TYPE:
        raise ValueError(f"not a {USAGE_TYPE} event: {event.type}")
    usage = msgspec.convert(event.data, UsageRecorded)
    if usage.cost_usd < 0:
        raise PoisonMessage(f"usage.recorded {event.id} has a negative cost_usd")
    status = await pool.execute(
        "INSERT INTO billing_ledger(event_id, usage_id, tenant_id, run_id, kind, provider, model,"
        " tool, input_tokens, output_tokens, tool_calls, cost_usd, reservation_id, price_version,"
        " step_id, occurred_at)"
        " VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,"
        "  coalesce((SELECT price_version FROM billing_reservations WHERE id=$13), $14),$15,$16)"
        " ON CONFLICT DO NOTHING",
        event.id,
        usage.usage_id,
        event.tenant_id,
        event.run_id,
        usage.kind,
        usage.provider,
        usage.model,
        usage.tool,
        usage.usage.input_tokens,
        usage.usage.output_tokens,
        usage.usage.tool_calls,
        Decimal(repr(usage.cost_usd)),
        usage.reservation_id,
        price_version,
        usage.step_id,
        event.time,
    )
    return bool(status.endswith(" 1"))


class LedgerConsumer:
    """The handler of the ledger's durable consumer on RUN_EVENTS."""

    def __init__(self, pool: asyncpg.Pool, price_version: str | None = None) -> None:
        self.pool = pool
        self.price_version = price_version
        """Recorded on rows whose reservation is unknown here."""
        self.recorded = 0
        self.duplicates = 0
        self.skipped = 0

    async def handle(self, event: Event, delivery: Delivery) -> None:
        """Record one usage.recorded event (the loop skips other types by their header)."""
        if event.type != USAGE_TYPE:
            self.skipped += 1
            return
        if await record(self.pool, event, self.price_version):
            self.recorded += 1
        else:
            self.duplicates += 1

    def consumer(self) -> Consumer[Event]:
        """Every run's usage events, shared by all billing replicas (one insert each)."""
        return Consumer(
            stream=subjects.RUN_EVENTS_STREAM,
            durable=CONSUMER,
            filter_subject=subjects.RUN_EVENTS_SUBJECTS,
            decodes=Event,
            event_types=frozenset({USAGE_TYPE}),
            handler=self.handle,
            concurrency=16,
            batch=64,
            # One insert per message: a replica killed mid-batch gets its messages
            # redelivered to a live one within seconds, not the default 30.
            ack_wait_s=5.0,
        )


@dataclass(frozen=True, kw_only=True)
class Reconciliation:
    """The ledger compared with the committed reservations (of one run, or of a tenant)."""

    ledger_usd: Decimal
    """Sum of the ledger rows."""
    committed_usd: Decimal
    """Sum of the committed reservations."""
    ledger_rows: int
    committed_reservations: int
    mismatched: list[str] = field(default_factory=list)
    """Reservation ids whose ledger cost differs from the committed cost."""
    unrecorded: list[str] = field(default_factory=list)
    """Committed reservations with no ledger row (yet)."""
    unreserved: list[str] = field(default_factory=list)
    """Ledger rows (event ids) with no committed reservation."""

    @property
    def balanced(self) -> bool:
        return not (self.mismatched or self.unrecorded or self.unreserved) and (
            self.ledger_usd == self.committed_usd
        )


async def reconcile(
    pool: asyncpg.Pool, *, run_id: str | None = None, tenant_id: str | None = None
) -> Reconciliation:
    """Compare ledger rows and committed reservations, for one run or one tenant."""
    if (run_id is None) == (tenant_id is None):
        raise ValueError("reconcile one run (run_id=) or one tenant (tenant_id=)")
    col, key = ("run_id", run_id) if run_id is not None else ("tenant_id", tenant_id)
    rows = await pool.fetch(
        f"""
        WITH r AS (SELECT id, cost_usd FROM billing_reservations
                   WHERE {col}=$1 AND status='committed'),
             l AS (SELECT event_id, reservation_id, cost_usd FROM billing_ledger WHERE {col}=$1)
        SELECT r.id AS reservation_id, r.cost_usd AS committed, l.event_id, l.cost_usd AS ledger
        FROM r FULL OUTER JOIN l ON l.reservation_id = r.id
        """,
        key,
    )
    ledger_usd = Decimal(0)
    committed_usd = Decimal(0)
    ledger_rows = committed = 0
    mismatched: list[str] = []
    unrecorded: list[str] = []
    unreserved: list[str] = []
    for r in rows:
        if r["event_id"] is not None:
            ledger_rows += 1
            ledger_usd += r["ledger"]
        if r["reservation_id"] is not None:
            committed += 1
            committed_usd += r["committed"]
        if r["reservation_id"] is None:
            unreserved.append(r["event_id"])
        elif r["event_id"] is None:
            unrecorded.append(r["reservation_id"])
        elif r["ledger"] != r["committed"]:
            mismatched.append(r["reservation_id"])
    return Reconciliation(
        ledger_usd=ledger_usd,
        committed_usd=committed_usd,
        ledger_rows=ledger_rows,
        committed_reservations=committed,
        mismatched=mismatched,
        unrecorded=unrecorded,
        unreserved=unreserved,
    )


async def ledger_total(pool: asyncpg.Pool, *, run_id: str) -> tuple[Decimal, int]:
    """The ledger's sum and row count for one run."""
    row = await pool.fetchrow(
        "SELECT coalesce(sum(cost_usd), 0) AS total, count(*) AS n FROM billing_ledger"
        " WHERE run_id=$1",
        run_id,
    )
    return row["total"], row["n"]
