"""Tenants and API keys. Keys are stored as sha256 hashes; requests carry `Bearer <key>`."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Depends, Request
from runloom.gateway import quotas
from runloom.gateway._edge import RATE_LIMIT_STATE
from runloom.gateway.problems import Problem
from runloom.gateway.state import GatewayState, get_state
from runloom.gateway.store.tenants import tenant_of_key


@dataclass(frozen=True)
class Principal:
    tenant_id: str
    """The authenticated tenant. Every query is scoped to it."""
    run_scope: str | None = None
    """Set when authenticated by a run-scoped stream token: only that run is visible."""


def api_only(who: Principal) -> None:
    """401 for a stream token anywhere but its run's event stream."""
    if who.run_scope is not None:
        raise Problem(401, "Unauthorized", "A stream token only opens its run's event stream.")


def _unauthorized(detail: str) -> Problem:
    p = Problem(401, "Unauthorized", detail)
    p.headers["WWW-Authenticate"] = "Bearer"
    return p


def _paced(request: Request, fields: dict[str, str]) -> None:
    """The answer carries the tenant's RateLimit fields (`_edge.Edge` adds them)."""
    setattr(request.state, RATE_LIMIT_STATE, fields)


async def principal(request: Request, state: GatewayState = Depends(get_state)) -> Principal:
    """Authenticate the request: `Authorization: Bearer <api key>`.

    Stream routes also accept `?token=` (see routes/events.py): a run-scoped stream token
    resolved by the streaming core's token issuer.
    """
    header = request.headers.get("authorization", "")
    if header:
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise _unauthorized("Send the API key as 'Authorization: Bearer <key>'.")
        tenant = await tenant_of_key(state.pool, key.strip())
        if tenant is None:
            raise _unauthorized(
                "This API key is not valid. Locally, the key is in .runloom/api-key "
                "(printed by 'runloom up')."
            )
        _paced(request, await quotas.take_request(state.pool, tenant))  # 429 over its rate
        return Principal(tenant_id=tenant)
    token = request.query_params.get("token")
    if token and state.streaming is not None:
        grant = state.streaming.tokens.resolve(token, request)
        if grant is not None:
            _paced(request, await quotas.take_request(state.pool, grant.tenant_id))
            return Principal(grant.tenant_id, run_scope=grant.run_id)
        raise _unauthorized("This stream token is invalid or expired; request a new one.")
    raise _unauthorized(
        "Missing API key: send 'Authorization: Bearer <key>'. Locally, the key is in "
        ".runloom/api-key (printed by 'runloom up')."
    )
