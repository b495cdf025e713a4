"""Budgets in Postgres: reserve, commit, release and expire, each idempotent by reservation id.

A reservation holds its estimated cost against the run's account and the tenant's period. The
check and the hold happen in one transaction that locks the run account rows and then the
tenant period rows and then the reservation rows (`SELECT ... FOR UPDATE`, each kind in key
order, the same order in every transaction, so they never deadlock): concurrent reservations
never take either budget past its limit, from any number of billing replicas.

Operations are applied in batches (`apply`): a batch takes its locks once, decides every
operation in order against the locked counters, writes the new counters back and commits once.
Every request of a busy tenant locks the same tenant row, so throughput is bounded by
commits per second; batching turns one commit (one WAL flush) per request into one per batch.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Literal

import asyncpg
import msgspec
from runloom.billing_client import QUANTUM, PriceTable
from runloom.contracts.commands import (
    CommitReply,
    CommitRequest,
    ReleaseReply,
    ReleaseRequest,
    ReserveReply,
    ReserveRequest,
)
from runloom.contracts.types import MAX_USD, check_usd

log = logging.getLogger(__name__)

WARN_FRACTION = Decimal("0.8")
"""A reservation that takes a budget to this fraction or beyond carries a warning."""
MIN_TTL_S = 1.0
MAX_TTL_S = 3600.0

RunBudgetLookup = Callable[[str], Awaitable[tuple[str | None, Decimal | None] | None]]
"""run_id -> (tenant_id, budget_usd) from the run's run.created event, or None."""


def period_start(now: datetime | None = None) -> date:
    """First day (UTC) of the monthly period containing `now`."""
    now = now or datetime.now(UTC)
    return date(now.year, now.month, 1)


def usd(value: float) -> Decimal:
    """A wire amount as an exact decimal (the float's shortest repr); InvalidValue outside
    [0, MAX_USD] (a quantize of 1e300 would raise decimal.InvalidOperation)."""
    return Decimal(repr(check_usd(float(value), "amount"))).quantize(QUANTUM)


def _budget(value: Decimal | None) -> Decimal | None:
    """A stored budget to the ledger's precision (a float written to numeric keeps its binary
    expansion: 3.7e-05 arrives as 0.0000369999...). One stored before budgets were bounded
    counts as MAX_USD, which no run reaches."""
    if value is None:
        return None
    return min(value, Decimal(MAX_USD)).quantize(QUANTUM)


def _f(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


@dataclass(frozen=True)
class Expire:
    """Expire a held reservation whose caller is gone (if it is past its expiry)."""

    reservation_id: str


Request = ReserveRequest | CommitRequest | ReleaseRequest | Expire
Reply = ReserveReply | CommitReply | ReleaseReply


@dataclass
class _Counters:
    held: Decimal
    spent: Decimal
    dirty: bool = False


@dataclass
class _Res:
    """A reservation row as the batch sees it (and will write it)."""

    id: str
    tenant_id: str
    run_id: str
    period: date
    kind: str
    status: str
    estimated: Decimal
    reply: dict[str, Any]
    provider: str | None = None
    model: str | None = None
    tool: str | None = None
    cost: Decimal | None = None
    price_version: str | None = None
    usage: dict[str, Any] | None = None
    usage_id: str | None = None
    ttl: float = 0.0
    due: bool = False
    new: bool = False
    dirty: bool = False
    rehold: bool = False
    """Reserved again after release or expiry: estimate, reply and expiry are new."""


@dataclass
class _Batch:
    """What one batch has locked, and decides against."""

    runs: dict[str, tuple[str, Decimal | None, _Counters]] = field(default_factory=dict)
    """run_id -> (owning tenant, run budget, counters)"""
    tenants: dict[tuple[str, date], _Counters] = field(default_factory=dict)
    """(tenant_id, period_start) -> counters"""
    budgets: dict[str, Decimal | None] = field(default_factory=dict)
    """tenant_id -> period budget (None: no budget)"""
    res: dict[str, _Res] = field(default_factory=dict)
    """reservation id -> reservation (existing rows, and rows this batch creates)"""


def _res_from_row(r: Any) -> _Res:
    return _Res(
        id=r["id"],
        tenant_id=r["tenant_id"],
        run_id=r["run_id"],
        period=r["period_start"],
        kind=r["kind"],
        status=r["status"],
        estimated=r["estimated_usd"],
        reply=r["reply"],
        provider=r["provider"],
        model=r["model"],
        tool=r["tool"],
        cost=r["cost_usd"],
        price_version=r["price_version"],
        usage_id=r["usage_id"],
        due=r["due"],
    )


_SELECT_RES = (
    "SELECT id, tenant_id, run_id, period_start, kind, status, estimated_usd, reply, provider,"
    " model, tool, cost_usd, price_version, usage_id, expires_at < now() AS due"
    " FROM billing_reservations WHERE id = ANY($1::text[])"
)


@dataclass(frozen=True, kw_only=True)
class Accounts:
    """The budget ledger of reservations, backed by Postgres."""

    pool: asyncpg.Pool
    """Connection pool on the migrated database."""
    prices: PriceTable
    """Prices for committed usage."""
    run_budget: RunBudgetLookup
    """Where a new run account's owner and budget come from (the run's run.created event)."""
    _have: set[Any] = field(default_factory=set, repr=False, compare=False)
    """Run ids and (tenant, period) keys whose rows are known to exist."""

    # -- one at a time ----------------------------------------------------------------------------

    async def reserve(self, req: ReserveRequest) -> ReserveReply:
        """Hold `estimated_usd` against the run's and the tenant's budget, or refuse."""
        return (await self.apply([req]))[0]  # type: ignore[return-value]

    async def commit(self, req: CommitRequest) -> CommitReply:
        """Replace the hold with the actual cost of `req.usage` (priced here)."""
        return (await self.apply([req]))[0]  # type: ignore[return-value]

    async def release(self, req: ReleaseRequest) -> ReleaseReply:
        """Drop the hold of a reservation that was not spent (no-op once settled)."""
        return (await self.apply([req]))[0]  # type: ignore[return-value]

    async def expire_due(self, limit: int = 500) -> int:
        """Expire held reservations past their `expires_at` (their caller is gone)."""
        rows = await self.pool.fetch(
            "SELECT id FROM billing_reservations WHERE status='held' AND expires_at < now()"
            " ORDER BY expires_at LIMIT $1",
            limit,
        )
        if not rows:
            return 0
        await self.apply([Expire(r["id"]) for r in rows])
        expired = await self.pool.fetchval(
            "SELECT count(*) FROM billing_reservations WHERE id = ANY($1::text[])"
            " AND status='expired'",
            [r["id"] for r in rows],
        )
        if expired:
            log.info("expired %d reservations; their holds were dropped", expired)
        return int(expired)

    # -- a batch ------------------------------------------------------------------------------

    async def apply(self, requests: Sequence[Request]) -> list[Reply | None]:
        """Apply requests in order, in one transaction; one reply per request (None: Expire)."""
        replies: list[Reply | None] = [None] * len(requests)
        work: list[int] = []
        for i, req in enumerate(requests):
            invalid = self._invalid(req)
            if invalid is not None:
                replies[i] = invalid
            else:
                work.append(i)
        if not work:
            return replies
        ids = sorted({requests[i].reservation_id for i in work})
        now_period = period_start()
        async with self.pool.acquire() as conn:
            # Where an existing reservation lives (its run and period) decides what to lock;
            # a batch of reservations only locks what its requests name.
            known: dict[str, Any] = {}
            if any(not isinstance(requests[i], ReserveRequest) for i in work):
                known = {r["id"]: r for r in await conn.fetch(_SELECT_RES, ids)}
            # Which rows each request needs locked: (run, tenant, period).
            runs: dict[str, str] = {}
            tenants: set[tuple[str, date]] = set()
            for i in work:
                req = requests[i]
                row = known.get(req.reservation_id)
                if row is not None:
                    runs.setdefault(row["run_id"], row["tenant_id"])
                    tenants.add((row["tenant_id"], row["period_start"]))
                if isinstance(req, ReserveRequest) or (
                    row is None and isinstance(req, CommitRequest)
                ):
                    runs.setdefault(req.run_id, req.tenant_id)
                    tenants.add((req.tenant_id, now_period))
            await self._ensure_rows(conn, runs, tenants)
            async with conn.transaction():
                batch = await self._lock(conn, sorted(runs), sorted(tenants), ids)
                for i in work:
                    replies[i] = self._decide(batch, requests[i], now_period)
                await self._write(conn, batch)
        return replies

    def _invalid(self, req: Request) -> Reply | None:
        if not req.reservation_id:
            return _refusal_or_error(req, "reservation_id is required")
        if isinstance(req, ReserveRequest):
            if not req.run_id or not req.tenant_id:
                return _refusal_or_error(req, "run_id and tenant_id are required")
            if not math.isfinite(req.estimated_usd) or req.estimated_usd < 0:
                return _refusal_or_error(req, "estimated_usd must be a finite number >= 0")
        return None

    async def _ensure_rows(
        self, conn: asyncpg.Connection, runs: dict[str, str], tenants: set[tuple[str, date]]
    ) -> None:
        """Create missing run accounts (budget from run.created) and tenant periods."""
        if len(self._have) > 200_000:
            self._have.clear()
        runs = {k: v for k, v in runs.items() if k not in self._have}
        tenants = {t for t in tenants if t not in self._have}
        if not runs and not tenants:
            return  # rows are never deleted: once seen, always there
        have = {
            r["run_id"]
            for r in await conn.fetch(
                "SELECT run_id FROM billing_run_accounts WHERE run_id = ANY($1::text[])",
                list(runs),
            )
        }
        for run_id in sorted(set(runs) - have):
            owner, budget = await self._run_budget(run_id)
            await conn.execute(
                "INSERT INTO billing_run_accounts(run_id, tenant_id, budget_usd) VALUES ($1,$2,$3)"
                " ON CONFLICT (run_id) DO NOTHING",
                run_id,
                owner or runs[run_id],
                budget,
            )
        if tenants:
            t_ids, periods = zip(*sorted(tenants), strict=True)
            await conn.execute(
                "INSERT INTO billing_tenant_periods(tenant_id, period_start)"
                " SELECT * FROM unnest($1::text[], $2::date[])"
                " ON CONFLICT (tenant_id, period_start) DO NOTHING",
                list(t_ids),
                list(periods),
            )
        self._have.update(runs)
        self._have.update(tenants)

    async def _run_budget(self, run_id: str) -> tuple[str | None, Decimal | None]:
        found = await self.run_budget(run_id)
        if found is not None:
            return found
        log.warning("run %s has no run.created event: no run budget", run_id)
        return None, None

    async def _lock(
        self,
        conn: asyncpg.Connection,
        runs: list[str],
        tenants: list[tuple[str, date]],
        ids: list[str],
    ) -> _Batch:
        """Lock run accounts, then tenant periods, then reservations; each in key order."""
        batch = _Batch()
        for r in await conn.fetch(
            "SELECT run_id, tenant_id, budget_usd, held_usd, spent_usd FROM billing_run_accounts"
            " WHERE run_id = ANY($1::text[]) ORDER BY run_id FOR UPDATE",
            runs,
        ):
            batch.runs[r["run_id"]] = (
                r["tenant_id"],
                _budget(r["budget_usd"]),
                _Counters(r["held_usd"], r["spent_usd"]),
            )
        if tenants:
            t_ids, periods = zip(*tenants, strict=True)
            for r in await conn.fetch(
                "SELECT p.tenant_id, p.period_start, p.held_usd, p.spent_usd, b.amount_usd"
                " FROM billing_tenant_periods p"
                " JOIN unnest($1::text[], $2::date[]) AS k(tenant_id, period_start)"
                "   ON p.tenant_id = k.tenant_id AND p.period_start = k.period_start"
                " LEFT JOIN billing_budgets b ON b.tenant_id = p.tenant_id"
                " ORDER BY p.tenant_id, p.period_start FOR UPDATE OF p",
                list(t_ids),
                list(periods),
            ):
                batch.tenants[(r["tenant_id"], r["period_start"])] = _Counters(
                    r["held_usd"], r["spent_usd"]
                )
                batch.budgets[r["tenant_id"]] = _budget(r["amount_usd"])
        for r in await conn.fetch(_SELECT_RES + " ORDER BY id FOR UPDATE", ids):
            batch.res[r["id"]] = _res_from_row(r)
        return batch

    # -- deciding, against the locked state ----------------------------------------------------

    def _decide(self, b: _Batch, req: Request, now_period: date) -> Reply | None:
        if isinstance(req, ReserveRequest):
            return self._reserve(b, req, now_period)
        if isinstance(req, CommitRequest):
            return self._commit(b, req, now_period)
        if isinstance(req, ReleaseRequest):
            found = self._settle(b, req.reservation_id, "released", tenant_id=req.tenant_id)
            return ReleaseReply(reservation_id=req.reservation_id, ok=found)
        self._settle(b, req.reservation_id, "expired", only_if_due=True)
        return None

    def _reserve(self, b: _Batch, req: ReserveRequest, period: date) -> ReserveReply:
        stored = b.res.get(req.reservation_id)
        if stored is not None and (
            stored.status not in ("released", "expired")
            or (stored.run_id, stored.tenant_id) != (req.run_id, req.tenant_id)
        ):
            return msgspec.convert(stored.reply, ReserveReply)  # a retry: the same answer
        # New, or reserved again after its hold was dropped (a caller retrying a failed call
        # under the same id): either way the budget is checked and the estimate held anew.
        owner, run_budget, run = b.runs[req.run_id]
        if owner != req.tenant_id:
            return _refusal(req, "run", "the run belongs to another tenant")
        tenant = b.tenants[(req.tenant_id, period)]
        tenant_budget = b.budgets.get(req.tenant_id)
        estimate = usd(req.estimated_usd)
        run_after = run.held + run.spent + estimate
        tenant_after = tenant.held + tenant.spent + estimate
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
            run.held += estimate
            tenant.held += estimate
            run.dirty = tenant.dirty = True
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
        if stored is not None:
            stored.status = "held" if granted else "refused"
            stored.period = period
            stored.estimated = estimate
            stored.reply = msgspec.to_builtins(reply)
            stored.ttl = min(max(req.ttl_s, MIN_TTL_S), MAX_TTL_S)
            stored.rehold = True
            stored.dirty = False  # the re-hold's own update writes its state
            return reply
        b.res[req.reservation_id] = _Res(
            id=req.reservation_id,
            tenant_id=req.tenant_id,
            run_id=req.run_id,
            period=period,
            kind=req.kind,
            status="held" if granted else "refused",
            estimated=estimate,
            reply=msgspec.to_builtins(reply),
            provider=req.provider,
            model=req.model,
            tool=req.tool,
            ttl=min(max(req.ttl_s, MIN_TTL_S), MAX_TTL_S),
            new=True,
        )
        return reply

    def _commit(self, b: _Batch, req: CommitRequest, now_period: date) -> CommitReply:
        res = b.res.get(req.reservation_id)
        if res is not None and res.status == "committed":  # a retry: the same answer
            return _commit_reply(res, replayed=True)
        if res is not None and res.tenant_id != req.tenant_id:
            return _commit_error(req, "the reservation belongs to another tenant")
        if res is not None and res.status == "refused":
            return _commit_error(req, "the reservation was refused; nothing may be spent under it")
        if res is None:
            # Spent without a (surviving) reservation: the money is gone, so record it.
            owner, _, _ = b.runs[req.run_id]
            if owner != req.tenant_id:
                return _commit_error(req, "the run belongs to another tenant")
            res = _Res(
                id=req.reservation_id,
                tenant_id=req.tenant_id,
                run_id=req.run_id,
                period=now_period,
                kind="tool" if req.tool and not req.model else "provider",
                status="committed",
                estimated=Decimal(0),
                reply=msgspec.to_builtins(
                    ReserveReply(reservation_id=req.reservation_id, granted=True)
                ),
                new=True,
            )
            b.res[res.id] = res
            held = Decimal(0)
        else:
            held = res.estimated if res.status == "held" else Decimal(0)
        cost = self.prices.cost(
            res.kind, req.usage, provider=req.provider, model=req.model, tool=req.tool
        )
        _, _, run = b.runs[res.run_id]
        tenant = b.tenants[(res.tenant_id, res.period)]
        run.held -= held
        tenant.held -= held
        run.spent += cost
        tenant.spent += cost
        run.dirty = tenant.dirty = True
        res.status = "committed"
        res.cost = cost
        res.price_version = self.prices.version
        res.usage = msgspec.to_builtins(req.usage)
        res.usage_id = req.usage_id
        res.provider = req.provider or res.provider
        res.model = req.model or res.model
        res.tool = req.tool or res.tool
        res.dirty = True
        return _commit_reply(res)

    def _settle(
        self,
        b: _Batch,
        reservation_id: str,
        status: Literal["released", "expired"],
        *,
        tenant_id: str | None = None,
        only_if_due: bool = False,
    ) -> bool:
        """Move a held reservation to `status`, dropping its hold. False if unknown."""
        res = b.res.get(reservation_id)
        if res is None or (tenant_id is not None and res.tenant_id != tenant_id):
            return False
        if res.status != "held" or (only_if_due and not res.due):
            return True
        _, _, run = b.runs[res.run_id]
        tenant = b.tenants[(res.tenant_id, res.period)]
        run.held -= res.estimated
        tenant.held -= res.estimated
        run.dirty = tenant.dirty = True
        res.status = status
        res.dirty = True
        return True

    # -- writing the batch back ------------------------------------------------------------------

    async def _write(self, conn: asyncpg.Connection, b: _Batch) -> None:
        runs = [(k, c.held, c.spent) for k, (_, _, c) in b.runs.items() if c.dirty]
        tenants = [(t, p, c.held, c.spent) for (t, p), c in b.tenants.items() if c.dirty]
        if runs or tenants:  # both counters in one statement
            await conn.execute(
                "WITH r AS ("
                "  UPDATE billing_run_accounts AS a SET held_usd = v.held, spent_usd = v.spent"
                "  FROM unnest($1::text[], $2::numeric[], $3::numeric[]) AS v(run_id, held, spent)"
                "  WHERE a.run_id = v.run_id RETURNING 1)"
                " UPDATE billing_tenant_periods AS a SET held_usd = v.held, spent_usd = v.spent"
                " FROM unnest($4::text[], $5::date[], $6::numeric[], $7::numeric[])"
                "   AS v(tenant_id, period_start, held, spent)"
                " WHERE a.tenant_id = v.tenant_id AND a.period_start = v.period_start",
                [r[0] for r in runs],
                [r[1] for r in runs],
                [r[2] for r in runs],
                [t[0] for t in tenants],
                [t[1] for t in tenants],
                [t[2] for t in tenants],
                [t[3] for t in tenants],
            )
        new = [r for r in b.res.values() if r.new]
        if new:
            await conn.executemany(
                "INSERT INTO billing_reservations(id, tenant_id, run_id, period_start, kind,"
                " provider, model, tool, estimated_usd, status, reply, cost_usd, price_version,"
                " usage, usage_id, expires_at, settled_at)"
                " VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,"
                " now() + make_interval(secs => $16),"
                " CASE WHEN $10 IN ('held', 'refused') THEN NULL ELSE now() END)",
                [
                    (
                        r.id,
                        r.tenant_id,
                        r.run_id,
                        r.period,
                        r.kind,
                        r.provider,
                        r.model,
                        r.tool,
                        r.estimated,
                        r.status,
                        r.reply,
                        r.cost,
                        r.price_version,
                        r.usage,
                        r.usage_id,
                        r.ttl,
                    )
                    for r in new
                ],
            )
        again = [r for r in b.res.values() if r.rehold and not r.new]
        if again:
            await conn.executemany(
                "UPDATE billing_reservations SET status=$2, period_start=$3, estimated_usd=$4,"
                " reply=$5, expires_at=now() + make_interval(secs => $6), settled_at=NULL"
                " WHERE id=$1",
                [(r.id, r.status, r.period, r.estimated, r.reply, r.ttl) for r in again],
            )
        changed = [r for r in b.res.values() if r.dirty and not r.new]
        if changed:
            await conn.executemany(
                "UPDATE billing_reservations SET status=$2, cost_usd=$3, price_version=$4,"
                " usage=$5, usage_id=$6, provider=$7, model=$8, tool=$9, settled_at=now()"
                " WHERE id=$1",
                [
                    (
                        r.id,
                        r.status,
                        r.cost,
                        r.price_version,
                        r.usage,
                        r.usage_id,
                        r.provider,
                        r.model,
                        r.tool,
                    )
                    for r in changed
                ],
            )


def _refusal(req: ReserveRequest, scope: str, reason: str) -> ReserveReply:
    return ReserveReply(
        reservation_id=req.reservation_id, granted=False, scope=scope, reason=reason
    )


def _commit_reply(res: _Res, *, replayed: bool = False) -> CommitReply:
    return CommitReply(
        reservation_id=res.id,
        ok=True,
        cost_usd=float(res.cost or 0),
        price_version=res.price_version,
        replayed=replayed,
    )


def _commit_error(req: CommitRequest, error: str) -> CommitReply:
    return CommitReply(reservation_id=req.reservation_id, ok=False, error=error)


def _refusal_or_error(req: Request, reason: str) -> Reply | None:
    if isinstance(req, ReserveRequest):
        return _refusal(req, "request", reason)
    if isinstance(req, CommitRequest):
        return _commit_error(req, reason)
    if isinstance(req, ReleaseRequest):
        return ReleaseReply(reservation_id=req.reservation_id, ok=False)
    return None
