"""A run's erasure by its tenant, the tenant's retention policy, and the gateway's own side of
every erasure.

- `DELETE /v1/runs/{id}`: the tenant's own ended run is erased everywhere (its stream subject,
  the archive and read models, the orchestrator's checkpoints, deliverables and their stored
  objects, the usage ledger's rows: the month's spend stays in billing's aggregate), as one
  resumable erasure job that the lifecycle service runs (`lifecycle.erase`: the gateway checks,
  the lifecycle service purges; the gateway may not); 404 for a run the tenant cannot see, 409
  for a run still going (cancel it first). Asked again, it resumes or answers 404 once done.
- `GET /v1/retention`: the tenant's policy (`keep_days`: null keeps every run).
- `erase.gateway` (request/reply, queue group `gateway`): the gateway removes its own rows of
  an erasure (its inventory first: revoking a whole tenant's keys and naming its runs).
- `retention.due` (request/reply, queue group `gateway`): the runs the lifecycle service's
  retention sweeper is to erase (the policies and the runs' ends are the gateway's rows).
- `runs.stalled` (request/reply, queue group `gateway`): the orchestrator says a running run
  is paused (the event store is full) and when it is tried again; `GET /v1/runs` shows it
  (`store.archive.mark_stalled`). Served here so the gateway has one responder.
"""

from __future__ import annotations

import functools
from typing import Any

from fastapi import APIRouter, Depends
from runloom.contracts import operations as ops
from runloom.gateway import usecases
from runloom.gateway._params import RunIdPath
from runloom.gateway.auth import Principal, api_only, principal
from runloom.gateway.problems import responses
from runloom.gateway.state import GatewayState, get_state
from runloom.gateway.store import archive
from runloom.gateway.store.erasure import GatewayErasure
from runloom.runtime.responder import Responder, Route

router = APIRouter(tags=["lifecycle"])

QUEUE = "gateway"


_responders: dict[int, Responder] = {}


async def startup(state: GatewayState) -> None:
    answers = GatewayErasure(state.pool)
    routes = [
        Route(ops.ERASE["gateway"], answers.handle),
        Route(ops.RETENTION_DUE, answers.due),
        Route(ops.RUNS_STALLED, functools.partial(archive.mark_stalled, state.pool)),
    ]
    responder = Responder(state.nc, state.js, QUEUE, routes)
    await responder.start()
    _responders[id(state)] = responder


async def shutdown(state: GatewayState) -> None:
    responder = _responders.pop(id(state), None)
    if responder is not None:
        await responder.stop()


@router.delete("/v1/runs/{run_id}", responses=responses(404, 409))
async def delete_run(
    run_id: RunIdPath, state: GatewayState = Depends(get_state), who: Principal = Depends(principal)
) -> dict[str, Any]:
    """Erase the run everywhere; answers what was removed, by table, stream and bucket."""
    api_only(who)
    return await usecases.erase_run(state, who, run_id)


@router.get("/v1/retention", responses=responses())
async def retention(
    state: GatewayState = Depends(get_state), who: Principal = Depends(principal)
) -> dict[str, Any]:
    """How long this tenant's ended runs are kept (`keep_days` null: forever)."""
    api_only(who)
    return await usecases.retention_policy(state, who)
