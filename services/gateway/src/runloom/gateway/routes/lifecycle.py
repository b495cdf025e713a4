"""A run's erasure by its tenant, the tenant's retention policy, and the gateway's own side of
every erasure.

- `DELETE /v1/runs/{id}`: the tenant's own ended run is erased everywhere (its stream subject,
  the archive and read models, the orchestrator's checkpoints, deliverables and their stored
  objects, the usage ledger's rows: the month's spend stays in billing's aggregate), as one
  resumable erasure job (`runloom.runtime.erasure`); 404 for a run the tenant cannot see, 409
  for a run still going (cancel it first). Asked again, it resumes or answers 404 once done.
- `GET /v1/retention`: the tenant's policy (`keep_days`: null keeps every run).
- `erase.gateway` (request/reply, queue group `gateway`): the gateway removes its own rows of
  an erasure (its inventory first: revoking a whole tenant's keys and naming its runs).
- The retention job (`runloom.gateway._retention`) runs beside it.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import asyncpg
from fastapi import APIRouter, Depends
from runloom.contracts import subjects
from runloom.contracts.commands import EraseReply, EraseRequest
from runloom.contracts.kinds import TERMINAL_STATUS
from runloom.gateway import _retention
from runloom.gateway._params import RunIdPath
from runloom.gateway.auth import Principal, principal
from runloom.gateway.problems import Problem, responses
from runloom.gateway.routes.runs import _api_only, load_run
from runloom.gateway.state import GatewayState, get_state
from runloom.runtime import erasure
from runloom.runtime.responder import Responder, Route

router = APIRouter(tags=["lifecycle"])

QUEUE = "gateway"
ENDED = frozenset(TERMINAL_STATUS.values())
TABLES = (
    erasure.Owned("run_artifacts"),
    erasure.Owned("run_deliverables"),
    erasure.Owned("idempotency_keys"),
    erasure.Owned("run_events"),
    erasure.Owned("runs", run_column="id"),
    erasure.Owned("tenant_retention", run_column=None),
    erasure.Owned("api_keys", run_column=None),
    erasure.Owned("tenants", run_column=None, tenant_column="id"),
)
"""The gateway's tables holding a tenant's data, in the order they are emptied."""


class GatewayErasure:
    """The gateway's answers on `erase.gateway`."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def handle(self, req: EraseRequest) -> EraseReply:
        if req.inventory:
            return await self.inventory(req)
        async with self.pool.acquire() as conn:
            return EraseReply(removed=await erasure.erase_rows(conn, "gateway", TABLES, req))

    async def inventory(self, req: EraseRequest) -> EraseReply:
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


_responders: dict[int, Responder] = {}
_tasks: dict[int, asyncio.Task[None]] = {}


async def startup(state: GatewayState) -> None:
    answers = GatewayErasure(state.pool)
    responder = Responder(
        state.nc, state.js, QUEUE, [Route(subjects.erase("gateway"), EraseRequest, answers.handle)]
    )
    await responder.start()
    _responders[id(state)] = responder
    _tasks[id(state)] = asyncio.create_task(_retention.run(state.nc, state.js, state.pool))


async def shutdown(state: GatewayState) -> None:
    task = _tasks.pop(id(state), None)
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    responder = _responders.pop(id(state), None)
    if responder is not None:
        await responder.stop()


@router.delete("/v1/runs/{run_id}", responses=responses(404, 409))
async def delete_run(
    run_id: RunIdPath, state: GatewayState = Depends(get_state), who: Principal = Depends(principal)
) -> dict[str, Any]:
    """Erase the run everywhere; answers what was removed, by table, stream and bucket."""
    _api_only(who)
    row = await load_run(state, who, run_id)
    if row["status"] not in ENDED:
        raise Problem(
            409,
            "Run still going",
            f"Run {run_id} is {row['status']}: cancel it (POST /v1/runs/{run_id}/cancel), "
            "wait for run.cancelled, then delete it.",
        )
    job = await erasure.Erasure.open(state.nc, state.js, who.tenant_id, run_ids=[run_id])
    try:
        done = await job.run()
    except erasure.ErasureError as exc:
        problem = Problem(
            503,
            "Erasure not finished",
            f"{exc}. The erasure is recorded; DELETE the run again to finish it.",
        )
        problem.headers["Retry-After"] = "5"
        raise problem from None
    return {"run_id": run_id, "erasure_id": done.erasure_id, "removed": done.removed}


@router.get("/v1/retention", responses=responses())
async def retention(
    state: GatewayState = Depends(get_state), who: Principal = Depends(principal)
) -> dict[str, Any]:
    """How long this tenant's ended runs are kept (`keep_days` null: forever)."""
    _api_only(who)
    days = await state.pool.fetchval(
        "SELECT keep_days FROM tenant_retention WHERE tenant_id=$1", who.tenant_id
    )
    return {
        "tenant_id": who.tenant_id,
        "keep_days": days,
        "policy": "keep" if days is None else f"delete runs ended more than {days} days ago",
        "applies_to": "ended runs: their events, archive, read models, deliverables and "
        "artifacts; the month's spend is kept in aggregate for billing",
    }
