"""Budgets in Postgres: reserve, commit, release and expire, each idempotent by reservation id.

A reservation holds its estimated cost against the run's account and the tenant's period. The
check and the hold happen in one transaction that locks the run account row and then the tenant
period row (`SELECT ... FOR UPDATE`, always in that order, so concurrent transactions never
deadlock): concurrent reservations never take either budget past its limit. Commit replaces
the hold with the actual cost; release and expiry drop the hold.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import asyncpg
import msgspec
from runloom.billing.prices import QUANTUM, PriceTable
from runloom.contracts.commands import (
    CommitReply,
    CommitRequest,
    ReleaseReply,
    ReleaseRequest,
    ReserveReply,
    ReserveRequest,
)

log = logging.getLogger(__name__)

WARN_FRACTION = Decimal("0.8")
"""A reservation that takes a budget to this fraction or beyond carries a warning."""
MIN_TTL_S = 1.0
MAX_TTL_S = 3600.0

RunBudgetLookup = Callable[[str], Awaitable[tuple[str | None, Decimal | None] | None]]
"""run_id -> (tenant_id, budget_usd) from another source (the run.created event), or None."""


def period_start(now: datetime | None = None) -> date:
    """First day (UTC) of the monthly period containing `now`."""
    now = now or datetime.now(UTC)
    return date(now.year, now.month, 1)


def usd(value: float) -> Decimal:
    """A wire amount as an exact decimal (the float's shortest repr)."""
    return Decimal(repr(float(value))).quantize(QUANTUM)


def _budget(value: Decimal | None) -> Decimal | None:
    """A stored budget to the ledger's precision (a float written to numeric keeps its binary
    expansion: 3.7e-05 arrives as 0.0000369999...)."""
    return None if value is None else value.quantize(QUANTUM)


def _f(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


@dataclass(frozen=True, kw_only=True)
class Accounts:
    """The budget ledger of reservations, backed by Postgres."""

    pool: asyncpg.Pool
    """Connection pool on the migrated database."""
    prices: PriceTable
    """Prices for committed usage."""
    run_budget_fallback: RunBudgetLookup | None = None
    """Where a run's budget comes from when the `runs` row is not there (yet)."""

    # -- reserve ------------------------------------------------------------------------------

    async def reserve(self, req: ReserveRequest) -> ReserveReply:
        """Hold `estimated_usd` against the run's and the tenant's budget, or refuse."""
        if not math.isfinite(req.estimated_usd) or req.estimated_usd < 0:
            return self._refusal(req, "request", "estimated_usd must be a finite number >= 0")
        if not req.reservation_id or not req.run_id or not req.tenant_id:
            return self._refusal(req, "request", "reservation_id, run_id and tenant_id are needed")
        estimate = usd(req.estimated_usd)
        ttl = min(max(req.ttl_s, MIN_TTL_S), MAX_TTL_S)
        period = period_start()
        async with self.pool.acquire() as conn:
            stored = await self._stored_reply(conn, req.reservation_id)
            if stored is not None:
                return stored
            await self._ensure_run_account(conn, req.run_id, req.tenant_id)
            await self._ensure_tenant_period(conn, req.tenant_id, period)
            async with conn.transaction():
                run = await conn.fetchrow(
                    "SELECT tenant_id, budget_usd, held_usd, spent_usd FROM billing_run_accounts"
                    " WHERE run_id=$1 FOR UPDATE",
                    req.run_id,
                )
                tenant = await conn.fetchrow(
                    "SELECT held_usd, spent_usd FROM billing_tenant_periods"
                    " WHERE tenant_id=$1 AND period_start=$2 FOR UPDATE",
                    req.tenant_id,
                    period,
                )
                # A concurrent retry of the same request may have won the locks first.
                stored = await self._stored_reply(conn, req.reservation_id)
                if stored is not None:
                    return stored
                if run["tenant_id"] != req.tenant_id:
                    return self._refusal(req, "run", "the run belongs to another tenant")
                tenant_budget = await conn.fetchval(
                    "SELECT amount_usd FROM billing_budgets WHERE tenant_id=$1", req.tenant_id
                )
                run_budget = _budget(run["budget_usd"])
                tenant_budget = _budget(tenant_budget)
                run_after = run["held_usd"] + run["spent_usd"] + estimate
                tenant_after = tenant["held_usd"] + tenant["spent_usd"] + estimate
                scope: str | None = None
                if run_budget is not None and run_after > run_budget:
                    scope = "run"
                elif tenant_budget is not None and tenant_after > tenant_budget:
                    scope = "tenant"
                granted = scope is None
                warnings = []
                if granted:
                    if run_budget is not None and run_after >= WARN_FRACTION * run_budget:
                        warnings.append("run")
                    if tenant_budget is not None and tenant_after >= WARN_FRACTION * tenant_budget:
                        warnings.append("tenant")
                run_shown = run_after if granted else run_after - estimate
                tenant_shown = tenant_after if granted else tenant_after - estimate
                reason = None
                if scope is not None:
                    limit, used = (
                        (run_budget, run_shown) if scope == "run" else (tenant_budget, tenant_shown)
                    )
                    reason = (
                        f"the {scope} budget of ${limit:.4f} would be exceeded: ${used:.6f}"
                        f" already spent or held, ${estimate:.6f} more requested"
                    )
                reply = ReserveReply(
                    reservation_id=req.reservation_id,
                    granted=granted,
                    scope=scope,
                    reason=reason,
                    run_spent_usd=float(run_shown),
                    run_budget_usd=_f(run_budget),
                    tenant_spent_usd=float(tenant_shown),
                    tenant_budget_usd=_f(tenant_budget),
                    warnings=warnings,
                )
                if granted:
                    await conn.execute(
                        "UPDATE billing_run_accounts SET held_usd = held_usd + $2 WHERE run_id=$1",
                        req.run_id,
                        estimate,
                    )
                    await conn.execute(
                        "UPDATE billing_tenant_periods SET held_usd = held_usd + $3"
                        " WHERE tenant_id=$1 AND period_start=$2",
                        req.tenant_id,
                        period,
                        estimate,
                    )
                await conn.execute(
                    "INSERT INTO billing_reservations(id, tenant_id, run_id, period_start, kind,"
                    " provider, model, tool, estimated_usd, status, reply, expires_at)"
                    " VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,"
                    " now() + make_interval(secs => $12))",
                    req.reservation_id,
                    req.tenant_id,
                    req.run_id,
                    period,
                    req.kind,
                    req.provider,
                    req.model,
                    req.tool,
                    estimate,
                    "held" if granted else "refused",
                    msgspec.to_builtins(reply),
                    ttl,
                )
                return reply

    def _refusal(self, req: ReserveRequest, scope: str, reason: str) -> ReserveReply:
        return ReserveReply(
            reservation_id=req.reservation_id, granted=False, scope=scope, reason=reason
        )

    async def _stored_reply(
        self, conn: asyncpg.Connection, reservation_id: str
    ) -> ReserveReply | None:
        raw = await conn.fetchval(
            "SELECT reply FROM billing_reservations WHERE id=$1", reservation_id
        )
        return None if raw is None else msgspec.convert(raw, ReserveReply)

    async def _ensure_run_account(
        self, conn: asyncpg.Connection, run_id: str, tenant_id: str
    ) -> None:
        if await conn.fetchval("SELECT 1 FROM billing_run_accounts WHERE run_id=$1", run_id):
            return
        owner, budget = await self._run_budget(conn, run_id)
        await conn.execute(
            "INSERT INTO billing_run_accounts(run_id, tenant_id, budget_usd) VALUES ($1,$2,$3)"
            " ON CONFLICT (run_id) DO NOTHING",
            run_id,
            owner or tenant_id,
            budget,
        )

    async def _run_budget(
        self, conn: asyncpg.Connection, run_id: str
    ) -> tuple[str | None, Decimal | None]:
        row = await conn.fetchrow("SELECT tenant_id, budget_usd FROM runs WHERE id=$1", run_id)
        if row is not None:
            return row["tenant_id"], row["budget_usd"]
        if self.run_budget_fallback is not None:
            found = await self.run_budget_fallback(run_id)
            if found is not None:
                return found
        log.warning("run %s has no runs row and no run.created event: no run budget", run_id)
        return None, None

    async def _ensure_tenant_period(
        self, conn: asyncpg.Connection, tenant_id: str, period: date
    ) -> None:
        await conn.execute(
            "INSERT INTO billing_tenant_periods(tenant_id, period_start) VALUES ($1,$2)"
            " ON CONFLICT (tenant_id, period_start) DO NOTHING",
            tenant_id,
            period,
        )

    # -- commit / release / expire ------------------------------------------------------------

    async def commit(self, req: CommitRequest) -> CommitReply:
        """Replace the hold with the actual cost of `req.usage` (priced here)."""
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT * FROM billing_reservations WHERE id=$1", req.reservation_id
            )
            if row is not None and row["status"] == "committed":
                return self._commit_reply(row)
            if row is not None and row["tenant_id"] != req.tenant_id:
                return CommitReply(
                    reservation_id=req.reservation_id,
                    ok=False,
                    error="the reservation belongs to another tenant",
                )
            if row is None:
                # Spent without a (surviving) reservation: the money is gone, so record it.
                period = period_start()
                await self._ensure_run_account(conn, req.run_id, req.tenant_id)
                await self._ensure_tenant_period(conn, req.tenant_id, period)
                kind = "tool" if req.tool and not req.model else "provider"
            else:
                period = row["period_start"]
                kind = row["kind"]
            cost = self.prices.cost(
                kind, req.usage, provider=req.provider, model=req.model, tool=req.tool
            )
            async with conn.transaction():
                await self._lock(conn, req.run_id, req.tenant_id, period)
                row = await conn.fetchrow(
                    "SELECT * FROM billing_reservations WHERE id=$1 FOR UPDATE", req.reservation_id
                )
                if row is not None and row["status"] == "committed":
                    return self._commit_reply(row)
                if row is not None and row["status"] == "refused":
                    return CommitReply(
                        reservation_id=req.reservation_id,
                        ok=False,
                        error="the reservation was refused; nothing may be spent under it",
                    )
                held = row["estimated_usd"] if row is not None and row["status"] == "held" else 0
                await conn.execute(
                    "UPDATE billing_run_accounts SET held_usd = held_usd - $2,"
                    " spent_usd = spent_usd + $3 WHERE run_id=$1",
                    req.run_id,
                    held,
                    cost,
                )
                await conn.execute(
                    "UPDATE billing_tenant_periods SET held_usd = held_usd - $3,"
                    " spent_usd = spent_usd + $4 WHERE tenant_id=$1 AND period_start=$2",
                    req.tenant_id,
                    period,
                    held,
                    cost,
                )
                usage = msgspec.to_builtins(req.usage)
                if row is None:
                    row = await conn.fetchrow(
                        "INSERT INTO billing_reservations(id, tenant_id, run_id, period_start,"
                        " kind, provider, model, tool, estimated_usd, status, reply, cost_usd,"
                        " price_version, usage, usage_id, expires_at, settled_at)"
                        " VALUES ($1,$2,$3,$4,$5,$6,$7,$8,0,'committed',$9,$10,$11,$12,$13,"
                        " now(), now()) RETURNING *",
                        req.reservation_id,
                        req.tenant_id,
                        req.run_id,
                        period,
                        kind,
                        req.provider,
                        req.model,
                        req.tool,
                        msgspec.to_builtins(
                            ReserveReply(reservation_id=req.reservation_id, granted=True)
                        ),
                        cost,
                        self.prices.version,
                        usage,
                        req.usage_id,
                    )
                else:
                    row = await conn.fetchrow(
                        "UPDATE billing_reservations SET status='committed', cost_usd=$2,"
                        " price_version=$3, usage=$4, usage_id=$5, settled_at=now(),"
                        " provider=coalesce($6, provider), model=coalesce($7, model),"
                        " tool=coalesce($8, tool) WHERE id=$1 RETURNING *",
                        req.reservation_id,
                        cost,
                        self.prices.version,
                        usage,
                        req.usage_id,
                        req.provider,
                        req.model,
                        req.tool,
                    )
                return self._commit_reply(row)

    @staticmethod
    def _commit_reply(row: Any) -> CommitReply:
        return CommitReply(
            reservation_id=row["id"],
            ok=True,
            cost_usd=float(row["cost_usd"]),
            price_version=row["price_version"],
        )

    async def release(self, req: ReleaseRequest) -> ReleaseReply:
        """Drop the hold of a reservation that was not spent (no-op once settled)."""
        found = await self._settle(req.reservation_id, "released", tenant_id=req.tenant_id)
        return ReleaseReply(reservation_id=req.reservation_id, ok=found)

    async def expire_due(self, limit: int = 200) -> int:
        """Expire held reservations past their `expires_at` (their caller is gone)."""
        ids = await self.pool.fetch(
            "SELECT id FROM billing_reservations WHERE status='held' AND expires_at < now()"
            " ORDER BY expires_at LIMIT $1",
            limit,
        )
        n = 0
        for r in ids:
            if await self._settle(r["id"], "expired", only_if_due=True):
                n += 1
        return n

    async def _settle(
        self,
        reservation_id: str,
        status: str,
        *,
        tenant_id: str | None = None,
        only_if_due: bool = False,
    ) -> bool:
        """Move a held reservation to `status`, dropping its hold. False if unknown."""
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT tenant_id, run_id, period_start, status FROM billing_reservations"
                " WHERE id=$1",
                reservation_id,
            )
            if row is None or (tenant_id is not None and row["tenant_id"] != tenant_id):
                return False
            if row["status"] != "held":
                return True
            async with conn.transaction():
                await self._lock(conn, row["run_id"], row["tenant_id"], row["period_start"])
                res = await conn.fetchrow(
                    "SELECT estimated_usd, status, expires_at < now() AS due"
                    " FROM billing_reservations WHERE id=$1 FOR UPDATE",
                    reservation_id,
                )
                if res["status"] != "held" or (only_if_due and not res["due"]):
                    return True
                await conn.execute(
                    "UPDATE billing_run_accounts SET held_usd = held_usd - $2 WHERE run_id=$1",
                    row["run_id"],
                    res["estimated_usd"],
                )
                await conn.execute(
                    "UPDATE billing_tenant_periods SET held_usd = held_usd - $3"
                    " WHERE tenant_id=$1 AND period_start=$2",
                    row["tenant_id"],
                    row["period_start"],
                    res["estimated_usd"],
                )
                await conn.execute(
                    "UPDATE billing_reservations SET status=$2, settled_at=now() WHERE id=$1",
                    reservation_id,
                    status,
                )
                if status == "expired":
                    log.info("reservation %s expired; its hold was dropped", reservation_id)
                return True

    @staticmethod
    async def _lock(conn: asyncpg.Connection, run_id: str, tenant_id: str, period: date) -> None:
        """Lock the run account, then the tenant period (the one order every writer uses)."""
        await conn.execute("SELECT 1 FROM billing_run_accounts WHERE run_id=$1 FOR UPDATE", run_id)
        await conn.execute(
            "SELECT 1 FROM billing_tenant_periods WHERE tenant_id=$1 AND period_start=$2"
            " FOR UPDATE",
            tenant_id,
            period,
        )
