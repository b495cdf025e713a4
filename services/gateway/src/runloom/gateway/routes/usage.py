"""Usage and budgets: what the tenant spent (from billing's ledger) and the period budget.

- `GET /v1/usage?run_id=…`: one run's metered calls and totals.
- `GET /v1/usage?from=…&to=…&group_by=day|run|model`: the tenant's spend over a time range.
- `PUT /v1/budget` `{"amount_usd": 25, "period": "month"}` and `GET /v1/budget`.

Everything is scoped to the API key's tenant; another tenant's run answers 404.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field
from runloom.contracts.types import MAX_USD
from runloom.gateway._params import RunIdQuery
from runloom.gateway.auth import Principal, principal
from runloom.gateway.problems import Problem, not_found, responses
from runloom.gateway.state import GatewayState, get_state

router = APIRouter(tags=["usage"])

GROUPS = ("day", "run", "model")
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 1, 1, tzinfo=UTC)
"""Times a usage query may name (UTC): a range is clipped to them, never overflows."""
TIME_PATTERN = r"^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+ -]\d{2}:\d{2})?)?$"
"""A date, or an RFC 3339 time (a `+` left unescaped in a URL arrives as a space)."""


def _usd(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


def _invalid(detail: str, field: str) -> Problem:
    return Problem(
        422,
        "Invalid request",
        detail,
        errors=[{"field": field, "message": detail}],
    )


def _parse_time(raw: str, name: str, *, end: bool) -> datetime:
    """RFC 3339 time or a date (a date as `to` means the end of that day), in UTC, clipped
    to [EARLIEST, LATEST]."""
    try:
        if len(raw) == 10:
            d = date.fromisoformat(raw)
            at = datetime(d.year, d.month, d.day, tzinfo=UTC)
            if end:
                at = at + timedelta(days=1) if at < LATEST else LATEST
        else:
            at = datetime.fromisoformat(raw.replace("Z", "+00:00").replace(" ", "+"))
            at = (at if at.tzinfo else at.replace(tzinfo=UTC)).astimezone(UTC)
    except (ValueError, OverflowError):
        raise _invalid(
            f"'{name}' must be a date (2026-11-01) or an RFC 3339 time "
            f"(2026-11-01T00:00:00Z) between years 1 and 9999, not {raw[:60]!r}.",
            name,
        ) from None
    return min(max(at, EARLIEST), LATEST)


def _month_start(now: datetime) -> datetime:
    return datetime(now.year, now.month, 1, tzinfo=UTC)


def _item(r: Any) -> dict[str, Any]:
    return {
        "usage_id": r["usage_id"],
        "time": r["occurred_at"].isoformat().replace("+00:00", "Z"),
        "kind": r["kind"],
        "provider": r["provider"],
        "model": r["model"],
        "tool": r["tool"],
        "input_tokens": r["input_tokens"],
        "output_tokens": r["output_tokens"],
        "tool_calls": r["tool_calls"],
        "cost_usd": float(r["cost_usd"]),
        "step_id": r["step_id"],
        "price_version": r["price_version"],
    }


def _totals(rows: list[Any]) -> dict[str, Any]:
    return {
        "cost_usd": float(sum((r["cost_usd"] for r in rows), Decimal(0))),
        "input_tokens": sum(r["input_tokens"] for r in rows),
        "output_tokens": sum(r["output_tokens"] for r in rows),
        "tool_calls": sum(r["tool_calls"] for r in rows),
        "calls": len(rows),
    }


@router.get("/v1/usage", responses=responses(403, 404))
async def get_usage(
    run_id: RunIdQuery = None,
    from_: str | None = Query(
        None,
        alias="from",
        pattern=TIME_PATTERN,
        description="Start (date or RFC 3339); default: this month's start.",
    ),
    to: str | None = Query(
        None,
        pattern=TIME_PATTERN,
        description="End, exclusive (a date means the end of that day); default: now.",
    ),
    group_by: Literal["day", "run", "model"] | None = Query(
        None, description="day | run | model (default: day)."
    ),
    who: Principal = Depends(principal),
    state: GatewayState = Depends(get_state),
) -> dict[str, Any]:
    """The tenant's metered usage, from billing's ledger (each usage event counted once)."""
    if run_id is not None:
        if from_ or to or group_by:
            raise _invalid(
                "Ask either for one run (run_id) or for a time range (from, to, group_by), "
                "not both.",
                "run_id",
            )
        return await _run_usage(state, who, run_id)
    if who.run_scope is not None:
        raise Problem(
            403,
            "Forbidden",
            "A stream token only reads its own run's usage: pass run_id, or use an API key.",
        )
    group = group_by or "day"
    if group not in GROUPS:
        raise _invalid(
            f"'group_by' must be one of {', '.join(GROUPS)}, not {group_by!r}.", "group_by"
        )
    now = datetime.now(UTC)
    start = _parse_time(from_, "from", end=False) if from_ else _month_start(now)
    end = _parse_time(to, "to", end=True) if to else now
    if start >= end:
        raise _invalid(
            f"'from' ({start.isoformat()}) must be before 'to' ({end.isoformat()}).", "from"
        )
    key_sql = {
        "day": "to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
        "run": "run_id",
        "model": "CASE WHEN kind = 'tool' THEN 'tool:' || coalesce(tool, '?')"
        " ELSE coalesce(provider, '?') || '/' || coalesce(model, '?') END",
    }[group]
    rows = await state.pool.fetch(
        f"SELECT {key_sql} AS key, sum(cost_usd) AS cost_usd,"
        " sum(input_tokens)::bigint AS input_tokens, sum(output_tokens)::bigint AS output_tokens,"
        " sum(tool_calls)::bigint AS tool_calls, count(*) AS calls"
        " FROM billing_ledger WHERE tenant_id=$1 AND occurred_at >= $2 AND occurred_at < $3"
        " GROUP BY 1 ORDER BY 1",
        who.tenant_id,
        start,
        end,
    )
    groups = [
        {
            group: r["key"],
            "cost_usd": float(r["cost_usd"]),
            "input_tokens": r["input_tokens"],
            "output_tokens": r["output_tokens"],
            "tool_calls": r["tool_calls"],
            "calls": r["calls"],
        }
        for r in rows
    ]
    return {
        "from": start.isoformat().replace("+00:00", "Z"),
        "to": end.isoformat().replace("+00:00", "Z"),
        "group_by": group,
        "total_usd": float(sum((r["cost_usd"] for r in rows), Decimal(0))),
        "groups": groups,
    }


async def _run_usage(state: GatewayState, who: Principal, run_id: str) -> dict[str, Any]:
    if who.run_scope is not None and who.run_scope != run_id:
        raise not_found("run", run_id)
    run = await state.pool.fetchrow(
        "SELECT budget_usd FROM runs WHERE id=$1 AND tenant_id=$2", run_id, who.tenant_id
    )
    rows = await state.pool.fetch(
        "SELECT * FROM billing_ledger WHERE run_id=$1 AND tenant_id=$2"
        " ORDER BY occurred_at, usage_id",
        run_id,
        who.tenant_id,
    )
    if run is None and not rows:
        raise not_found("run", run_id)
    account = await state.pool.fetchrow(
        "SELECT held_usd FROM billing_run_accounts WHERE run_id=$1 AND tenant_id=$2",
        run_id,
        who.tenant_id,
    )
    return {
        "run_id": run_id,
        "budget_usd": _usd(run["budget_usd"]) if run is not None else None,
        "total_usd": _totals(rows)["cost_usd"],
        "held_usd": _usd(account["held_usd"]) if account is not None else 0.0,
        "totals": _totals(rows),
        "items": [_item(r) for r in rows],
    }


# -- budget ---------------------------------------------------------------------------------------


class BudgetIn(BaseModel):
    """The tenant's budget for each period."""

    model_config = ConfigDict(extra="forbid")

    amount_usd: float = Field(
        ge=0,
        le=MAX_USD,
        allow_inf_nan=False,
        strict=True,
        description="Spending limit per period, in USD (0 stops all).",
    )
    period: Literal["month"] = Field(
        "month", description="The budget period (calendar month, UTC)."
    )


async def _budget_view(state: GatewayState, tenant_id: str) -> dict[str, Any]:
    now = datetime.now(UTC)
    period_start = now.date().replace(day=1)
    budget = await state.pool.fetchrow(
        "SELECT amount_usd, period, updated_at FROM billing_budgets WHERE tenant_id=$1", tenant_id
    )
    spend = await state.pool.fetchrow(
        "SELECT held_usd, spent_usd FROM billing_tenant_periods"
        " WHERE tenant_id=$1 AND period_start=$2",
        tenant_id,
        period_start,
    )
    spent = spend["spent_usd"] if spend else Decimal(0)
    held = spend["held_usd"] if spend else Decimal(0)
    amount = budget["amount_usd"] if budget else None
    return {
        "amount_usd": _usd(amount),
        "period": budget["period"] if budget else "month",
        "period_start": period_start.isoformat(),
        "spent_usd": float(spent),
        "held_usd": float(held),
        "remaining_usd": None if amount is None else float(max(amount - spent - held, Decimal(0))),
        "updated_at": budget["updated_at"].isoformat().replace("+00:00", "Z") if budget else None,
    }


def _no_stream_tokens(who: Principal) -> None:
    if who.run_scope is not None:
        raise Problem(403, "Forbidden", "Budgets need an API key; a stream token cannot use them.")


@router.get("/v1/budget", responses=responses(403))
async def get_budget(
    who: Principal = Depends(principal), state: GatewayState = Depends(get_state)
) -> dict[str, Any]:
    """The tenant's period budget and this period's spend (amount_usd null: no budget)."""
    _no_stream_tokens(who)
    return await _budget_view(state, who.tenant_id)


@router.put("/v1/budget", responses=responses(403))
async def put_budget(
    body: BudgetIn,
    who: Principal = Depends(principal),
    state: GatewayState = Depends(get_state),
) -> dict[str, Any]:
    """Set the tenant's budget per period; reservations beyond it are refused from now on."""
    _no_stream_tokens(who)
    await state.pool.execute(
        "INSERT INTO billing_budgets(tenant_id, period, amount_usd) VALUES ($1, $2, $3)"
        " ON CONFLICT (tenant_id) DO UPDATE SET period=EXCLUDED.period,"
        " amount_usd=EXCLUDED.amount_usd, updated_at=now()",
        who.tenant_id,
        body.period,
        Decimal(repr(body.amount_usd)),
    )
    return await _budget_view(state, who.tenant_id)
