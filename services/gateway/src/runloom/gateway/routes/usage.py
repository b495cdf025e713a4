"""Usage and budgets: what the tenant spent (billing's ledger) and the period budget.

- `GET /v1/usage?run_id=…`: one run's metered calls and totals.
- `GET /v1/usage?from=…&to=…&group_by=day|run|model`: the tenant's spend over a time range.
- `PUT /v1/budget` `{"amount_usd": 25, "period": "month"}` and `GET /v1/budget`.

Billing owns the ledger and the budgets: each route asks it over request/reply
(`runloom.billing_client.BillingQueries`); when no billing replica answers, the route answers
503 with `Retry-After`. Everything is scoped to the API key's tenant; another tenant's run
answers 404.
"""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal, TypeVar

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field
from runloom.billing_client import BillingQueries, BillingUnavailable, MeteringError
from runloom.contracts.commands import BudgetReply, UsageItem
from runloom.contracts.types import MAX_USD, rfc3339, rfc3339_or_none
from runloom.gateway._params import RunIdQuery
from runloom.gateway.auth import Principal, principal
from runloom.gateway.problems import Problem, not_found, responses
from runloom.gateway.state import GatewayState, get_state
from runloom.gateway.store import archive

router = APIRouter(tags=["usage"])

GROUPS = ("day", "run", "model")
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 1, 1, tzinfo=UTC)
"""Times a usage query may name (UTC): a range is clipped to them, never overflows."""
TIME_PATTERN = r"^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+ -]\d{2}:\d{2})?)?$"
"""A date, or an RFC 3339 time (a `+` left unescaped in a URL arrives as a space)."""
RETRY_AFTER_S = 5
"""What a client is told to wait when billing does not answer."""

T = TypeVar("T")


async def _billing(call: Awaitable[T]) -> T:
    """Billing's answer; 503 + Retry-After when it does not answer, 422 when it refuses."""
    try:
        return await call
    except BillingUnavailable as exc:
        problem = Problem(
            503,
            "Billing unavailable",
            f"Usage and budgets are served by billing, which did not answer ({exc.problem}). "
            f"Try again in {RETRY_AFTER_S} s.",
        )
        problem.headers["Retry-After"] = str(RETRY_AFTER_S)
        raise problem from None
    except MeteringError as exc:
        raise Problem(422, "Invalid request", str(exc)) from None


def _queries(state: GatewayState) -> BillingQueries:
    return BillingQueries(state.nc)


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


def _item(item: UsageItem) -> dict[str, Any]:
    return {
        "usage_id": item.usage_id,
        "time": rfc3339(item.time),
        "kind": item.kind,
        "provider": item.provider,
        "model": item.model,
        "tool": item.tool,
        "input_tokens": item.input_tokens,
        "output_tokens": item.output_tokens,
        "tool_calls": item.tool_calls,
        "cost_usd": item.cost_usd,
        "step_id": item.step_id,
        "price_version": item.price_version,
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
        raise _invalid(f"'from' ({rfc3339(start)}) must be before 'to' ({rfc3339(end)}).", "from")
    reply = await _billing(_queries(state).usage(who.tenant_id, start, end, group))
    groups = [
        {
            group: g.key,
            "cost_usd": g.cost_usd,
            "input_tokens": g.input_tokens,
            "output_tokens": g.output_tokens,
            "tool_calls": g.tool_calls,
            "calls": g.calls,
        }
        for g in reply.groups
    ]
    return {
        "from": rfc3339(start),
        "to": rfc3339(end),
        "group_by": group,
        "total_usd": reply.total_usd,
        "groups": groups,
    }


async def _run_usage(state: GatewayState, who: Principal, run_id: str) -> dict[str, Any]:
    if who.run_scope is not None and who.run_scope != run_id:
        raise not_found("run", run_id)
    known, budget = await archive.run_budget(state.pool, who.tenant_id, run_id)
    usage = await _billing(_queries(state).run_usage(who.tenant_id, run_id))
    if not known and not usage.items:
        raise not_found("run", run_id)
    totals = usage.totals
    return {
        "run_id": run_id,
        "budget_usd": budget,
        "total_usd": totals.cost_usd,
        "held_usd": usage.held_usd,
        "totals": {
            "cost_usd": totals.cost_usd,
            "input_tokens": totals.input_tokens,
            "output_tokens": totals.output_tokens,
            "tool_calls": totals.tool_calls,
            "calls": totals.calls,
        },
        "items": [_item(i) for i in usage.items],
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


def _budget_view(b: BudgetReply) -> dict[str, Any]:
    return {
        "amount_usd": b.amount_usd,
        "period": b.period,
        "period_start": b.period_start.isoformat(),
        "spent_usd": b.spent_usd,
        "held_usd": b.held_usd,
        "remaining_usd": b.remaining_usd,
        "updated_at": rfc3339_or_none(b.updated_at),
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
    return _budget_view(await _billing(_queries(state).budget(who.tenant_id)))


@router.put("/v1/budget", responses=responses(403))
async def put_budget(
    body: BudgetIn,
    who: Principal = Depends(principal),
    state: GatewayState = Depends(get_state),
) -> dict[str, Any]:
    """Set the tenant's budget per period; reservations beyond it are refused from now on."""
    _no_stream_tokens(who)
    reply = await _billing(_queries(state).set_budget(who.tenant_id, body.amount_usd, body.period))
    return _budget_view(reply)
