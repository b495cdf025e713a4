"""Runs over HTTP: create (idempotent), list, read, cancel, and stream tokens.

Each route translates HTTP to a use case (`runloom.gateway.usecases`) and its result back:
the use cases hold what a run request means, in which order it writes, and its failures.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Header, Query
from fastapi.responses import JSONResponse
from runloom.contracts.kinds import RunStatus
from runloom.contracts.types import rfc3339
from runloom.gateway import usecases
from runloom.gateway._params import KEY_PATTERN, RunIdPath
from runloom.gateway.auth import Principal, api_only, principal
from runloom.gateway.problems import responses
from runloom.gateway.state import GatewayState, get_state, streaming
from runloom.gateway.usecases import CancelIn, RunIn, run_view

router = APIRouter(prefix="/v1/runs", tags=["runs"])


_REPLAY: dict[int | str, dict[str, Any]] = {
    200: {"description": "A replay: the run this Idempotency-Key created, as it is now."}
}


@router.post("", status_code=201, responses=responses(429) | _REPLAY)
async def create_run(
    body: RunIn,
    state: GatewayState = Depends(get_state),
    who: Principal = Depends(principal),
    idempotency_key: str | None = Header(
        default=None,
        pattern=KEY_PATTERN,
        description="The same key and body return the same run (1-200 visible ASCII).",
    ),
) -> JSONResponse:
    """Start a run. With `Idempotency-Key`, the same key and body return the same run.

    Answers once `run.created` is durably stored, the read-model row is in and the start
    command is stored. If those fail it answers 503: a retry with the same Idempotency-Key
    completes the run; without a key the run is ended as failed (`run.failed`)."""
    api_only(who)
    created = await usecases.create_run(state, who, body, idempotency_key)
    return JSONResponse(
        run_view(created.row) | ({"webhook": created.webhook} if created.webhook else {}),
        status_code=200 if created.replay else 201,
        headers={"Location": f"/v1/runs/{created.run_id}"},
    )


@router.get("", responses=responses(400))
async def list_runs(
    state: GatewayState = Depends(get_state),
    who: Principal = Depends(principal),
    limit: int = Query(20, ge=1, le=100),
    cursor: str | None = Query(
        None, max_length=200, description="`next_cursor` of the previous page, as given."
    ),
    status: RunStatus | None = None,
) -> dict[str, Any]:
    """The tenant's runs, newest first, a page at a time."""
    api_only(who)
    return await usecases.list_runs(state, who, limit, cursor, status)


@router.get("/{run_id}", responses=responses(404))
async def get_run(
    run_id: RunIdPath, state: GatewayState = Depends(get_state), who: Principal = Depends(principal)
) -> dict[str, Any]:
    api_only(who)
    return run_view(await usecases.load_run(state, who, run_id))


@router.post("/{run_id}/cancel", status_code=202, responses=responses(404, 409))
async def cancel_run(
    run_id: RunIdPath,
    body: CancelIn | None = None,
    state: GatewayState = Depends(get_state),
    who: Principal = Depends(principal),
) -> JSONResponse:
    """Ask the run to stop (accepted even before it started); it answers with run.cancelled."""
    api_only(who)
    ev = await usecases.cancel_run(state, who, run_id, body.reason if body else None)
    return JSONResponse(
        {"run_id": run_id, "status": "cancel_requested", "event_id": ev.id, "seq": ev.seq},
        status_code=202,
    )


@router.post("/{run_id}/stream-token", status_code=201, responses=responses(404))
async def stream_token(
    run_id: RunIdPath, state: GatewayState = Depends(get_state), who: Principal = Depends(principal)
) -> dict[str, Any]:
    """A short-lived token for `GET /v1/runs/{id}/events?token=...` (EventSource)."""
    api_only(who)
    await usecases.load_run(state, who, run_id)
    token, expires_at = streaming(state).tokens.issue(who.tenant_id, run_id)
    return {
        "token": token,
        "expires_at": rfc3339(datetime.fromtimestamp(expires_at, tz=UTC)),
        "events_url": f"/v1/runs/{run_id}/events?token={token}",
    }
