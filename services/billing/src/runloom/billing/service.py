"""The billing service (one replica): request/reply responders, the ledger consumer, the sweeper.

Consumes: every run's `usage.recorded` (RUN_EVENTS, durable `billing-ledger`, declared in
`ledger.LedgerConsumer.consumer`). Serves (request/reply, queue group `billing`):
`billing.reserve|commit|release` and the gateway's views, `billing.budget.get|set` and
`billing.usage.run|range` (`queries.Queries`). Publishes: the replies, and dead letters of
requests it cannot read.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from decimal import Decimal

from nats.js import JetStreamContext
from runloom.billing.accounts import Accounts, RunBudgetLookup
from runloom.billing.ledger import LedgerConsumer
from runloom.billing.queries import Queries
from runloom.billing.responders import Responders
from runloom.billing.sweeper import sweep
from runloom.billing_client import load_prices
from runloom.contracts.types import MAX_USD
from runloom.runtime import consumer, db
from runloom.runtime.config import Settings, env_float
from runloom.runtime.eventlog import EventLog
from runloom.runtime.metrics import consumer_gauges
from runloom.runtime.service import ServiceContext, serve

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class BillingOptions:
    """Billing's own settings, from `RUNLOOM_BILLING_*` (prices: RUNLOOM_PRICES_FILE)."""

    sweep_every_s: float = field(default_factory=lambda: env_float("RUNLOOM_BILLING_SWEEP_S", 5.0))
    """How often held reservations past their expiry are expired."""
    concurrency: int = field(
        default_factory=lambda: int(env_float("RUNLOOM_BILLING_CONCURRENCY", 64))
    )
    """Requests handled at once by one replica."""
    lanes: int = field(default_factory=lambda: int(env_float("RUNLOOM_BILLING_LANES", 4)))
    """Budget transactions in flight at once per replica (one tenant always uses one lane)."""


def run_budget_from_events(js: JetStreamContext) -> RunBudgetLookup:
    """A run's (tenant, budget), read from its first stored event, run.created (one direct get).

    The gateway stores run.created before any service hears of the run, so a reservation
    never arrives before it; billing keeps no copy of the gateway's `runs` table.
    """
    events = EventLog(js, "billing")

    async def lookup(run_id: str) -> tuple[str | None, Decimal | None] | None:
        stored = await events.first(run_id)
        if stored is None or stored.event.type != "run.created":
            return None
        ev = stored.event
        budget = ev.data.get("budget_usd")
        if budget is None:
            return ev.tenant_id, None
        return ev.tenant_id, min(Decimal(repr(float(budget))), Decimal(MAX_USD))

    return lookup


async def main(ctx: ServiceContext, options: BillingOptions | None = None) -> None:
    options = options or BillingOptions()
    prices = load_prices()
    log.info("price table version %s", prices.version)
    # Budget transactions get their own connections: a burst on the ledger consumer must not
    # make a reservation wait for a connection.
    accounts_pool = await db.create_pool(
        ctx.settings.effective_database_url, max_size=options.lanes + 2
    )
    accounts = Accounts(
        pool=accounts_pool,
        prices=prices,
        run_budget=run_budget_from_events(ctx.js),
    )
    responders = Responders(
        ctx.nc,
        ctx.js,
        accounts,
        queries=Queries(ctx.pool),
        concurrency=options.concurrency,
        lanes=options.lanes,
    )
    await responders.start()
    ledger = LedgerConsumer(ctx.pool, prices.version).consumer()
    if ctx.management is not None:
        ctx.management.add_scrape_hook(consumer_gauges(ctx.js, ledger.stream, ledger.durable))
    tasks = [
        asyncio.create_task(
            consumer.serve(
                ledger,
                ctx.js,
                ctx.stop,
                events=EventLog(ctx.js, ctx.producer),
                ready=ctx.ready,
            ),
            name="ledger",
        ),
        asyncio.create_task(sweep(accounts, ctx.stop, options.sweep_every_s), name="sweeper"),
    ]
    log.info("billing ready: responders in queue group 'billing', ledger consumer, sweeper")
    try:
        await ctx.stop.wait()
    finally:
        await responders.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
        await accounts_pool.close()


async def run(settings: Settings) -> None:
    await serve("billing", settings, main)
