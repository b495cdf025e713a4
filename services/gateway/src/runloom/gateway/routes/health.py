"""Liveness and readiness. `/readyz` reflects NATS and Postgres connectivity right now, and
whether a consumer or responder of this process is stalled (`runtime.management.Liveness`)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from runloom.gateway.state import GatewayState, get_state
from runloom.runtime.management import liveness_results

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(state: GatewayState = Depends(get_state)) -> JSONResponse:
    checks: dict[str, str] = {}
    try:
        if not state.nc.is_connected:
            raise ConnectionError("not connected")
        await asyncio.wait_for(state.nc.flush(), timeout=1.0)
        checks["nats"] = "ok"
    except Exception as exc:
        checks["nats"] = f"unavailable: {exc or type(exc).__name__}"
    try:
        await asyncio.wait_for(state.pool.fetchval("SELECT 1"), timeout=1.0)
        checks["postgres"] = "ok"
    except Exception as exc:
        checks["postgres"] = f"unavailable: {exc or type(exc).__name__}"
    checks.update(liveness_results())  # the archive consumer, the gateway's responders
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status_code=200 if ready else 503,
    )
