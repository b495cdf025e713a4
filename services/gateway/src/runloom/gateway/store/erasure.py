"""The gateway's side of an erasure (`erase.gateway`) and the tenants' retention policies
(`retention.due`): the only code that deletes the gateway's rows of a tenant or a run,
revokes a tenant's keys for an erasure, and writes `tenant_retention`."""

from __future__ import annotations

import asyncpg
from runloom.contracts.commands import (
    EraseReply,
    EraseRequest,
    RetentionDueReply,
    RetentionDueRequest,
    TenantRuns,
)
from runloom.contracts.kinds import TERMINAL_STATUS
from runloom.runtime import erasure

ENDED = frozenset(TERMINAL_STATUS.values())
TABLES = (
    erasure.Owned("run_artifacts"),
    erasure.Owned("run_deliverables"),
    erasure.Owned("idempotency_keys"),
    erasure.Owned("run_events"),
    erasure.Owned("runs", run_column="id"),
    erasure.Owned("stream_leases", run_column=None),
    erasure.Owned("run_admissions"),
    erasure.Owned("request_buckets", run_column=None, tenant_column="key"),
    erasure.Owned("tenant_quotas", run_column=None),
    erasure.Owned("tenant_retention", run_column=None),
    erasure.Owned("api_keys", run_column=None),
    erasure.Owned("tenants", run_column=None, tenant_column="id"),
)
"""The gateway's tables holding a tenant's data, in the order they are emptied (`inbox` and
`gateway_secrets` hold none)."""


class GatewayErasure:
    """The gateway's answers on `erase.gateway`."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def handle(self, req: EraseRequest) -> EraseReply:
        if req.inventory:
            return await self.inventory(req)
        async with self.pool.acquire() as conn:
            return EraseReply(removed=await erasure.erase_rows(conn, "gateway", TABLES, req))

    async def due(self, req: RetentionDueRequest) -> RetentionDueReply:
        """`retention.due`: the runs past their tenant's policy (the lifecycle service erases)."""
        runs = await due(self.pool, max(1, min(req.batch, 1000)))
        return RetentionDueReply(due=[TenantRuns(tenant_id=t, run_ids=r) for t, r in runs.items()])

    async def inventory(self, req: EraseRequest) -> EraseReply:
        """Revoke a whole tenant's keys; name the runs (and those not ended)."""
        removed: dict[str, int] = {}
        if req.whole_tenant:
            status = await self.pool.execute(
                "UPDATE api_keys SET revoked_at = now() WHERE tenant_id=$1 AND revoked_at IS NULL",
                req.tenant_id,
            )
            removed["gateway.api_keys (revoked)"] = int(status.split()[-1])
            rows = await self.pool.fetch(
                "SELECT id, status FROM runs WHERE tenant_id=$1 UNION"
                " SELECT DISTINCT run_id, NULL FROM run_events WHERE tenant_id=$1",
                req.tenant_id,
            )
        else:
            rows = await self.pool.fetch(
                "SELECT id, status FROM runs WHERE id = ANY($1::text[]) AND tenant_id=$2",
                list(req.run_ids),
                req.tenant_id,
            )
        ids = sorted({r["id"] for r in rows})
        open_ids = sorted({r["id"] for r in rows if r["status"] and r["status"] not in ENDED})
        return EraseReply(removed=removed, run_ids=ids, open_run_ids=open_ids)


async def retention_days(pool: asyncpg.Pool, tenant_id: str) -> int | None:
    """The tenant's `keep_days` (None: every run is kept)."""
    days = await pool.fetchval(
        "SELECT keep_days FROM tenant_retention WHERE tenant_id=$1", tenant_id
    )
    return None if days is None else int(days)


async def set_retention(pool: asyncpg.Pool, tenant_id: str, keep_days: int | None) -> bool:
    """Set the tenant's policy; False when there is no such tenant."""
    status = await pool.execute(
        "INSERT INTO tenant_retention(tenant_id, keep_days) SELECT id, $2 FROM tenants"
        " WHERE id=$1 ON CONFLICT (tenant_id) DO UPDATE SET keep_days=$2, updated_at=now()",
        tenant_id,
        keep_days,
    )
    return not status.endswith(" 0")


async def due(pool: asyncpg.Pool, batch: int) -> dict[str, list[str]]:
    """Per tenant with a policy, the ended runs older than it (at most `batch` each)."""
    rows = await pool.fetch(
        "SELECT r.tenant_id, r.id FROM runs r JOIN tenant_retention p USING (tenant_id)"
        " WHERE p.keep_days IS NOT NULL AND r.status = ANY($1::text[])"
        "  AND r.ended_at < now() - make_interval(days => p.keep_days)"
        " ORDER BY r.tenant_id, r.ended_at, r.id",
        sorted(ENDED),
    )
    out: dict[str, list[str]] = {}
    for r in rows:
        runs = out.setdefault(r["tenant_id"], [])
        if len(runs) < batch:
            runs.append(r["id"])
    return out
