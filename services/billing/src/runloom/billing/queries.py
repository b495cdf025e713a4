"""Budget and usage views, answered over request/reply (`billing.budget.*`, `billing.usage.*`).

The gateway shows these at `GET|PUT /v1/budget` and `GET /v1/usage`; billing's tables stay
billing's. Every query is scoped to the tenant named in the request (the gateway sets it from
the API key, never from the body).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg
from runloom.billing.accounts import period_start
from runloom.contracts.commands import (
    BudgetGetRequest,
    BudgetReply,
    BudgetSetRequest,
    EraseReply,
    EraseRequest,
    RunUsageReply,
    RunUsageRequest,
    UsageGroup,
    UsageItem,
    UsageRangeReply,
    UsageRangeRequest,
    UsageTotals,
)
from runloom.runtime import erasure

_GROUP_KEY = {
    "day": "to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
    "run": "run_id",
    "model": "CASE WHEN kind = 'tool' THEN 'tool:' || coalesce(tool, '?')"
    " ELSE coalesce(provider, '?') || '/' || coalesce(model, '?') END",
}


def _usd(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


def _item(r: Any) -> UsageItem:
    return UsageItem(
        usage_id=r["usage_id"],
        time=r["occurred_at"].astimezone(UTC),
        kind=r["kind"],
        provider=r["provider"],
        model=r["model"],
        tool=r["tool"],
        input_tokens=r["input_tokens"],
        output_tokens=r["output_tokens"],
        tool_calls=r["tool_calls"],
        cost_usd=float(r["cost_usd"]),
        step_id=r["step_id"],
        price_version=r["price_version"],
    )


ERASED_TABLES = (
    erasure.Owned("billing_usage_rollup", run_column=None),
    erasure.Owned("billing_ledger"),
    erasure.Owned("billing_reservations"),
    erasure.Owned("billing_run_accounts"),
    erasure.Owned("billing_tenant_periods", run_column=None),
    erasure.Owned("billing_budgets", run_column=None),
)
"""Billing's tables holding a tenant's data, in the order they are emptied. Erasing runs (a
tenant's request, retention) removes their ledger rows, reservations and run accounts; the
month's spend stays in `billing_tenant_periods`, and what the ledger rows added up to moves
into `billing_usage_rollup` (per day, kind, provider, model and tool) in the same transaction,
so usage reports keep their totals. Only a whole tenant's erasure removes those and its
budget."""

_ROLL_UP = (
    "INSERT INTO billing_usage_rollup AS r (tenant_id, day, kind, provider, model, tool, calls,"
    " input_tokens, output_tokens, tool_calls, cost_usd)"
    " SELECT tenant_id, (occurred_at AT TIME ZONE 'UTC')::date, kind, coalesce(provider, ''),"
    "  coalesce(model, ''), coalesce(tool, ''), count(*), sum(input_tokens), sum(output_tokens),"
    "  sum(tool_calls), sum(cost_usd)"
    " FROM billing_ledger WHERE run_id = ANY($1::text[]) AND tenant_id = $2"
    " GROUP BY 1, 2, 3, 4, 5, 6"
    " ON CONFLICT (tenant_id, day, kind, provider, model, tool) DO UPDATE SET"
    "  calls = r.calls + excluded.calls, input_tokens = r.input_tokens + excluded.input_tokens,"
    "  output_tokens = r.output_tokens + excluded.output_tokens,"
    "  tool_calls = r.tool_calls + excluded.tool_calls, cost_usd = r.cost_usd + excluded.cost_usd"
)
_ROLLUP_KEY = {
    "day": "to_char(day, 'YYYY-MM-DD')",
    "run": "'(erased runs)'",
    "model": "CASE WHEN kind = 'tool' THEN 'tool:' || coalesce(nullif(tool, ''), '?')"
    " ELSE coalesce(nullif(provider, ''), '?') || '/' || coalesce(nullif(model, ''), '?') END",
}


@dataclass(frozen=True)
class Queries:
    """Answers the budget and usage requests from billing's own tables, and erasures."""

    pool: asyncpg.Pool

    async def erase(self, req: EraseRequest) -> EraseReply:
        async with self.pool.acquire() as conn, conn.transaction():
            if not req.whole_tenant and req.run_ids:
                await conn.execute(_ROLL_UP, list(req.run_ids), req.tenant_id)
            return EraseReply(removed=await erasure.erase_rows(conn, "billing", ERASED_TABLES, req))

    async def budget(self, req: BudgetGetRequest) -> BudgetReply:
        start = period_start(datetime.now(UTC))
        budget = await self.pool.fetchrow(
            "SELECT amount_usd, period, updated_at FROM billing_budgets WHERE tenant_id=$1",
            req.tenant_id,
        )
        spend = await self.pool.fetchrow(
            "SELECT held_usd, spent_usd FROM billing_tenant_periods"
            " WHERE tenant_id=$1 AND period_start=$2",
            req.tenant_id,
            start,
        )
        spent = spend["spent_usd"] if spend else Decimal(0)
        held = spend["held_usd"] if spend else Decimal(0)
        amount = budget["amount_usd"] if budget else None
        return BudgetReply(
            amount_usd=_usd(amount),
            period=budget["period"] if budget else "month",
            period_start=start,
            spent_usd=float(spent),
            held_usd=float(held),
            remaining_usd=None if amount is None else float(max(amount - spent - held, 0)),
            updated_at=budget["updated_at"].astimezone(UTC) if budget else None,
        )

    async def set_budget(self, req: BudgetSetRequest) -> BudgetReply:
        await self.pool.execute(
            "INSERT INTO billing_budgets(tenant_id, period, amount_usd) VALUES ($1, $2, $3)"
            " ON CONFLICT (tenant_id) DO UPDATE SET period=EXCLUDED.period,"
            " amount_usd=EXCLUDED.amount_usd, updated_at=now()",
            req.tenant_id,
            req.period,
            Decimal(repr(req.amount_usd)),
        )
        return await self.budget(BudgetGetRequest(tenant_id=req.tenant_id))

    async def run_usage(self, req: RunUsageRequest) -> RunUsageReply:
        rows = await self.pool.fetch(
            "SELECT * FROM billing_ledger WHERE run_id=$1 AND tenant_id=$2"
            " ORDER BY occurred_at, usage_id",
            req.run_id,
            req.tenant_id,
        )
        held = await self.pool.fetchval(
            "SELECT held_usd FROM billing_run_accounts WHERE run_id=$1 AND tenant_id=$2",
            req.run_id,
            req.tenant_id,
        )
        totals = UsageTotals(
            cost_usd=float(sum((r["cost_usd"] for r in rows), Decimal(0))),
            input_tokens=sum(r["input_tokens"] for r in rows),
            output_tokens=sum(r["output_tokens"] for r in rows),
            tool_calls=sum(r["tool_calls"] for r in rows),
            calls=len(rows),
        )
        return RunUsageReply(
            run_id=req.run_id,
            held_usd=float(held) if held is not None else 0.0,
            totals=totals,
            items=[_item(r) for r in rows],
        )

    async def usage_range(self, req: UsageRangeRequest) -> UsageRangeReply:
        rows = await self.pool.fetch(
            "SELECT key, sum(cost_usd) AS cost_usd, sum(input_tokens)::bigint AS input_tokens,"
            " sum(output_tokens)::bigint AS output_tokens,"
            " sum(tool_calls)::bigint AS tool_calls, sum(calls)::bigint AS calls FROM ("
            f" SELECT {_GROUP_KEY[req.group_by]} AS key, cost_usd, input_tokens, output_tokens,"
            "  tool_calls, 1 AS calls"
            "  FROM billing_ledger WHERE tenant_id=$1 AND occurred_at >= $2 AND occurred_at < $3"
            # Erased runs' usage, by UTC day (a day counts when it starts within the range).
            f" UNION ALL SELECT {_ROLLUP_KEY[req.group_by]}, cost_usd, input_tokens,"
            "  output_tokens, tool_calls, calls FROM billing_usage_rollup WHERE tenant_id=$1"
            "  AND day >= ($2 AT TIME ZONE 'UTC')::date"
            "  AND day::timestamp < ($3 AT TIME ZONE 'UTC')"
            ") AS u GROUP BY 1 ORDER BY 1",
            req.tenant_id,
            req.start,
            req.end,
        )
        return UsageRangeReply(
            total_usd=float(sum((r["cost_usd"] for r in rows), Decimal(0))),
            groups=[
                UsageGroup(
                    key=r["key"],
                    cost_usd=float(r["cost_usd"]),
                    input_tokens=r["input_tokens"],
                    output_tokens=r["output_tokens"],
                    tool_calls=r["tool_calls"],
                    calls=r["calls"],
                )
                for r in rows
            ],
        )
