"""Webhook endpoints of the tenant: register, list, delete, rotate the secret, deliveries.

- `POST /v1/webhooks` `{url, events, description}` -> 201 with the signing `secret`
  (`whsec_…`, shown here and at rotation only).
- `GET /v1/webhooks`, `DELETE /v1/webhooks/{id}`.
- `POST /v1/webhooks/{id}/rotate-secret` `{grace_s}`: a new secret; the previous one also
  signs for `grace_s` seconds (default 24 h), so receivers can switch without a gap.
- `POST /v1/webhooks/{id}/enable`: a disabled endpoint again (its pending deliveries go).
- `GET /v1/webhooks/{id}/deliveries?status=&limit=`: attempts, status, response code, last
  error, next retry. `POST /v1/webhooks/{id}/deliveries/{delivery_id}/redeliver`.

The webhooks service owns endpoints and deliveries; every route asks it (`_webhooks.ask`,
NATS request/reply on `webhooks.*`) and never reads its tables. It checks a URL (https only,
public addresses only, after resolving the host): a refusal is a 422 problem saying why;
no answer is a 503 with Retry-After.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from runloom.contracts import operations as ops
from runloom.contracts.types import rfc3339_or_none
from runloom.contracts.webhooks import (
    DELIVERY_ID,
    WEBHOOK_EVENT_TYPES,
    WEBHOOK_ID,
    DeleteWebhookRequest,
    DeliveryStatus,
    EnableWebhookRequest,
    ListDeliveriesRequest,
    ListWebhooksRequest,
    RedeliverRequest,
    RotateWebhookSecretRequest,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEventType,
)
from runloom.gateway._params import StorableText, text
from runloom.gateway._webhooks import MAX_URL_CHARS, ask, create
from runloom.gateway.auth import Principal, api_only, principal
from runloom.gateway.problems import not_found, responses
from runloom.gateway.state import GatewayState, get_state

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])

WebhookIdPath = Annotated[
    str, Path(pattern=WEBHOOK_ID.pattern, examples=[WEBHOOK_ID.example], description="Webhook id")
]
DeliveryIdPath = Annotated[
    str,
    Path(pattern=DELIVERY_ID.pattern, examples=[DELIVERY_ID.example], description="Delivery id"),
]
WebhookUrl = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_URL_CHARS,
        # No example: a generated client or a fuzzer would send it, and resolving its host is
        # a lookup outside this machine.
        description="Where to POST: an absolute https:// URL on a public address "
        "(e.g. https://hooks.your-domain/runloom).",
    ),
]


class WebhookIn(BaseModel):
    """A webhook endpoint to register (the tenant comes from the API key)."""

    model_config = ConfigDict(extra="forbid")

    url: WebhookUrl
    events: list[WebhookEventType] = Field(
        min_length=1,
        max_length=len(WEBHOOK_EVENT_TYPES),
        description=f"Run events to deliver, among {', '.join(WEBHOOK_EVENT_TYPES)}.",
    )
    description: StorableText | None = text(500, "What the endpoint is for.", optional=True)


class RotateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    grace_s: float | None = Field(
        default=None,
        ge=0,
        le=7 * 86400,
        description="How long the previous secret still signs (default 24 h, at most 7 days).",
    )


def endpoint_json(e: WebhookEndpoint) -> dict[str, Any]:
    return {
        "id": e.id,
        "url": e.url,
        "events": list(e.events),
        "description": e.description,
        "run_id": e.run_id,
        "status": e.status,
        "disabled_reason": e.disabled_reason,
        "disabled_at": rfc3339_or_none(e.disabled_at),
        "failing_since": rfc3339_or_none(e.failing_since),
        "previous_secret_expires_at": rfc3339_or_none(e.previous_secret_expires_at),
        "created_at": rfc3339_or_none(e.created_at),
    }


def delivery_json(d: WebhookDelivery) -> dict[str, Any]:
    return {
        "id": d.id,
        "event_id": d.event_id,
        "event_type": d.event_type,
        "run_id": d.run_id,
        "seq": d.seq,
        "status": d.status,
        "attempts": d.attempts,
        "response_status": d.response_status,
        "last_error": d.last_error,
        "last_attempt_at": rfc3339_or_none(d.last_attempt_at),
        "next_attempt_at": rfc3339_or_none(d.next_attempt_at),
        "delivered_at": rfc3339_or_none(d.delivered_at),
        "created_at": rfc3339_or_none(d.created_at),
    }


# -- routes -------------------------------------------------------------------------------------


@router.post("", status_code=201, responses=responses())
async def create_webhook(
    body: WebhookIn,
    state: GatewayState = Depends(get_state),
    who: Principal = Depends(principal),
) -> JSONResponse:
    """Register an endpoint; the answer holds its signing secret (shown this once)."""
    api_only(who)
    reply = await create(
        state, who, body.url, list(dict.fromkeys(body.events)), description=body.description
    )
    assert reply.endpoint is not None
    return JSONResponse(
        {**endpoint_json(reply.endpoint), "secret": reply.secret},
        status_code=201,
        headers={"Location": f"/v1/webhooks/{reply.endpoint.id}"},
    )


@router.get("", responses=responses())
async def list_webhooks(
    state: GatewayState = Depends(get_state), who: Principal = Depends(principal)
) -> dict[str, Any]:
    """The tenant's endpoints (never their secrets), newest first."""
    api_only(who)
    reply = await ask(state, ops.WEBHOOKS_LIST, ListWebhooksRequest(tenant_id=who.tenant_id))
    return {"webhooks": [endpoint_json(e) for e in reply.endpoints]}


@router.delete("/{webhook_id}", status_code=204, response_class=Response, responses=responses(404))
async def delete_webhook(
    webhook_id: WebhookIdPath,
    state: GatewayState = Depends(get_state),
    who: Principal = Depends(principal),
) -> Response:
    """Delete an endpoint; what was still pending for it is dropped."""
    api_only(who)
    reply = await ask(
        state,
        ops.WEBHOOKS_DELETE,
        DeleteWebhookRequest(tenant_id=who.tenant_id, endpoint_id=webhook_id),
    )
    if not reply.deleted:
        raise not_found("webhook", webhook_id)
    return Response(status_code=204)


@router.post("/{webhook_id}/rotate-secret", responses=responses(404))
async def rotate_secret(
    webhook_id: WebhookIdPath,
    body: RotateIn | None = None,
    state: GatewayState = Depends(get_state),
    who: Principal = Depends(principal),
) -> dict[str, Any]:
    """A new signing secret; the previous one also signs until `previous_secret_expires_at`."""
    api_only(who)
    reply = await ask(
        state,
        ops.WEBHOOKS_ROTATE,
        RotateWebhookSecretRequest(
            tenant_id=who.tenant_id,
            endpoint_id=webhook_id,
            grace_s=body.grace_s if body is not None else None,
        ),
    )
    if reply.endpoint is None:
        raise not_found("webhook", webhook_id)
    return {**endpoint_json(reply.endpoint), "secret": reply.secret}


@router.post("/{webhook_id}/enable", responses=responses(404))
async def enable_webhook(
    webhook_id: WebhookIdPath,
    state: GatewayState = Depends(get_state),
    who: Principal = Depends(principal),
) -> dict[str, Any]:
    """Enable a disabled endpoint again; what is pending for it goes out from now on."""
    api_only(who)
    reply = await ask(
        state,
        ops.WEBHOOKS_ENABLE,
        EnableWebhookRequest(tenant_id=who.tenant_id, endpoint_id=webhook_id),
    )
    if reply.endpoint is None:
        raise not_found("webhook", webhook_id)
    return endpoint_json(reply.endpoint)


@router.get("/{webhook_id}/deliveries", responses=responses(404))
async def list_deliveries(
    webhook_id: WebhookIdPath,
    status: DeliveryStatus | None = Query(default=None, description="Only this status."),
    limit: int = Query(default=50, ge=1, le=500),
    state: GatewayState = Depends(get_state),
    who: Principal = Depends(principal),
) -> dict[str, Any]:
    """The endpoint's deliveries, newest first: attempts, status, last answer, next retry."""
    api_only(who)
    reply = await ask(
        state,
        ops.WEBHOOKS_DELIVERIES,
        ListDeliveriesRequest(
            tenant_id=who.tenant_id, endpoint_id=webhook_id, limit=limit, status=status
        ),
    )
    if not reply.found:
        raise not_found("webhook", webhook_id)
    return {"webhook_id": webhook_id, "deliveries": [delivery_json(d) for d in reply.deliveries]}


@router.post(
    "/{webhook_id}/deliveries/{delivery_id}/redeliver", status_code=202, responses=responses(404)
)
async def redeliver(
    webhook_id: WebhookIdPath,
    delivery_id: DeliveryIdPath,
    state: GatewayState = Depends(get_state),
    who: Principal = Depends(principal),
) -> dict[str, Any]:
    """Send one delivery again now (the same body and webhook-id, signed anew)."""
    api_only(who)
    reply = await ask(
        state,
        ops.WEBHOOKS_REDELIVER,
        RedeliverRequest(tenant_id=who.tenant_id, endpoint_id=webhook_id, delivery_id=delivery_id),
    )
    if reply.delivery is None:
        raise not_found("delivery", delivery_id)
    return delivery_json(reply.delivery)
