"""Webhooks: the bodies Runloom POSTs to a tenant's endpoints, and the endpoints' management.

A webhook delivers one run event to an HTTP endpoint, signed per the Standard Webhooks
specification: `webhook-id` is the event's `id` (the same on every attempt, so a receiver
deduplicates on it), `webhook-timestamp` the attempt's Unix time, `webhook-signature`
`v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">`. The body is one of the
`*Webhook` types below, by `type`: the spec's recommended `type`, `timestamp`, `data`, plus
the run, its tenant and the event's `seq` (events of one run reach an endpoint in `seq` order).

Management is request/reply on `webhooks.*` (the gateway asks, the webhooks service answers).
"""

from __future__ import annotations

from typing import Any, Literal, get_args

import msgspec
from runloom.contracts.events import (
    ClarificationRequested,
    DeliverableFailed,
    DeliverableReady,
    RunBudgetStopped,
    RunCancelled,
    RunCompleted,
    RunCreated,
    RunFailed,
    RunStarted,
)
from runloom.contracts.types import IdKind, RunId, UtcTime

WebhookEventType = Literal[
    "run.created",
    "run.started",
    "run.completed",
    "run.failed",
    "run.cancelled",
    "run.budget_stopped",
    "clarification.requested",
    "deliverable.ready",
    "deliverable.failed",
]
"""The run events an endpoint may subscribe to."""
WEBHOOK_EVENT_TYPES: tuple[WebhookEventType, ...] = get_args(WebhookEventType)

WebhookStatus = Literal["enabled", "disabled"]
"""An endpoint is disabled after failing for long, or at once when it answers 410 Gone."""

DeliveryStatus = Literal["pending", "delivered", "failed"]
"""pending: not yet answered with a 2xx (waiting for its turn or its next retry); delivered:
answered 2xx; failed: still not delivered when its retries ran out."""

WebhookRefusal = Literal["invalid_url", "forbidden_address", "unresolvable"]
"""Why an endpoint's URL was refused: not an absolute https URL; an address Runloom never
calls (loopback, private, link-local, reserved); a host name that does not resolve."""

_ULID = "[0-9A-HJKMNP-TV-Z]{26}"
WEBHOOK_ID = IdKind("webhook", f"^whk_{_ULID}$", "whk_01JD6Q0W7XKZ3T9M4N5P6R8S2V")
DELIVERY_ID = IdKind("delivery", f"^dlv_{_ULID}$", "dlv_01JD6Q0W7XKZ3T9M4N5P6R8S2V")


# -- the delivered bodies ---------------------------------------------------------------------


class WebhookBody(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What every webhook body holds; each event type has its own type below."""

    type: WebhookEventType
    """The run event's type."""
    timestamp: UtcTime
    """When the event was stored (not when this attempt was sent: that is `webhook-timestamp`)."""
    event_id: str
    """The event's id, also sent as `webhook-id`: the same on every attempt."""
    run_id: RunId
    tenant_id: str
    seq: int
    """The event's place in its run (1, 2, 3 ...): an endpoint gets a run's events in this order."""
    data: Any
    """The event's payload (its type's `data`)."""


class RunCreatedWebhook(WebhookBody, kw_only=True, omit_defaults=True):
    """A run was created (its question, skill, budget and options)."""

    type: Literal["run.created"]
    data: RunCreated


class RunStartedWebhook(WebhookBody, kw_only=True, omit_defaults=True):
    """An orchestrator replica started (or took over) the run."""

    type: Literal["run.started"]
    data: RunStarted


class RunCompletedWebhook(WebhookBody, kw_only=True, omit_defaults=True):
    """The run completed (`partial` says whether something is missing, and `missing` what)."""

    type: Literal["run.completed"]
    data: RunCompleted


class RunFailedWebhook(WebhookBody, kw_only=True, omit_defaults=True):
    """The run failed; `reason` says why (error, clarification_timeout, ...)."""

    type: Literal["run.failed"]
    data: RunFailed


class RunCancelledWebhook(WebhookBody, kw_only=True, omit_defaults=True):
    """The run was cancelled."""

    type: Literal["run.cancelled"]
    data: RunCancelled


class RunBudgetStoppedWebhook(WebhookBody, kw_only=True, omit_defaults=True):
    """The run stopped at its budget; what it produced so far stays available."""

    type: Literal["run.budget_stopped"]
    data: RunBudgetStopped


class ClarificationRequestedWebhook(WebhookBody, kw_only=True, omit_defaults=True):
    """The run asks a question and waits for the answer (POST /v1/runs/{id}/clarification)."""

    type: Literal["clarification.requested"]
    data: ClarificationRequested


class DeliverableReadyWebhook(WebhookBody, kw_only=True, omit_defaults=True):
    """A deliverable (report, website, slides) is ready; its artifacts can be downloaded."""

    type: Literal["deliverable.ready"]
    data: DeliverableReady


class DeliverableFailedWebhook(WebhookBody, kw_only=True, omit_defaults=True):
    """A deliverable's attempt failed (`will_retry` says whether another follows)."""

    type: Literal["deliverable.failed"]
    data: DeliverableFailed


WEBHOOK_BODIES: dict[WebhookEventType, type[WebhookBody]] = {
    "run.created": RunCreatedWebhook,
    "run.started": RunStartedWebhook,
    "run.completed": RunCompletedWebhook,
    "run.failed": RunFailedWebhook,
    "run.cancelled": RunCancelledWebhook,
    "run.budget_stopped": RunBudgetStoppedWebhook,
    "clarification.requested": ClarificationRequestedWebhook,
    "deliverable.ready": DeliverableReadyWebhook,
    "deliverable.failed": DeliverableFailedWebhook,
}
"""The body type of each event type an endpoint can subscribe to."""


# -- management (request/reply on webhooks.*) -------------------------------------------------


class WebhookEndpoint(msgspec.Struct, kw_only=True, omit_defaults=True):
    """An endpoint as its tenant sees it (never its secret)."""

    id: str
    url: str
    events: list[WebhookEventType]
    description: str | None = None
    run_id: RunId | None = None
    """Set for a run's own webhook (`webhook` on POST /v1/runs): only that run's events."""
    status: WebhookStatus = "enabled"
    disabled_reason: str | None = None
    """Why the endpoint was disabled, in words a person acts on."""
    disabled_at: UtcTime | None = None
    failing_since: UtcTime | None = None
    """The first failed attempt since the last delivery (None: not failing)."""
    previous_secret_expires_at: UtcTime | None = None
    """After a rotation: until when the previous secret still signs too."""
    created_at: UtcTime


class CreateWebhookRequest(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Register an endpoint (idempotent by `endpoint_id`: a retry gets the same secret)."""

    tenant_id: str
    endpoint_id: str
    url: str
    events: list[WebhookEventType]
    description: str | None = None
    run_id: RunId | None = None
    check_only: bool = False
    """Only check the URL (the reply is refused or empty): POST /v1/runs checks a run's
    webhook before it stores anything."""


class CreateWebhookReply(msgspec.Struct, kw_only=True, omit_defaults=True):
    endpoint: WebhookEndpoint | None = None
    """The stored endpoint (absent when refused)."""
    secret: str | None = None
    """`whsec_` + base64 of the signing key."""
    refused: WebhookRefusal | None = None
    detail: str | None = None
    """Why the URL was refused, and what to send instead."""


class ListWebhooksRequest(msgspec.Struct, kw_only=True, omit_defaults=True):
    tenant_id: str


class ListWebhooksReply(msgspec.Struct, kw_only=True, omit_defaults=True):
    endpoints: list[WebhookEndpoint] = []
    """Newest first."""


class DeleteWebhookRequest(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Delete an endpoint and what is still pending for it."""

    tenant_id: str
    endpoint_id: str


class DeleteWebhookReply(msgspec.Struct, kw_only=True, omit_defaults=True):
    deleted: bool
    """False when the tenant has no such endpoint."""


class RotateWebhookSecretRequest(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A new secret; the previous one also signs for `grace_s` seconds."""

    tenant_id: str
    endpoint_id: str
    grace_s: float | None = None
    """None: the service's default (24 h)."""


class RotateWebhookSecretReply(msgspec.Struct, kw_only=True, omit_defaults=True):
    endpoint: WebhookEndpoint | None = None
    """Absent when the tenant has no such endpoint."""
    secret: str | None = None


class EnableWebhookRequest(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Enable a disabled endpoint again: what is pending for it goes out from now on."""

    tenant_id: str
    endpoint_id: str


class EnableWebhookReply(msgspec.Struct, kw_only=True, omit_defaults=True):
    endpoint: WebhookEndpoint | None = None
    """Absent when the tenant has no such endpoint."""


class WebhookDelivery(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One event for one endpoint, and how its attempts went."""

    id: str
    endpoint_id: str
    event_id: str
    """Also the `webhook-id` header."""
    event_type: WebhookEventType
    run_id: RunId
    seq: int
    status: DeliveryStatus
    attempts: int = 0
    response_status: int | None = None
    """The HTTP status of the last attempt (None: no answer)."""
    last_error: str | None = None
    """What went wrong on the last attempt (timeout, refused, non-2xx ...)."""
    last_attempt_at: UtcTime | None = None
    next_attempt_at: UtcTime | None = None
    """When the next attempt is due (pending only)."""
    delivered_at: UtcTime | None = None
    created_at: UtcTime


class ListDeliveriesRequest(msgspec.Struct, kw_only=True, omit_defaults=True):
    tenant_id: str
    endpoint_id: str
    limit: int = 50
    status: DeliveryStatus | None = None


class ListDeliveriesReply(msgspec.Struct, kw_only=True, omit_defaults=True):
    found: bool
    """False when the tenant has no such endpoint."""
    deliveries: list[WebhookDelivery] = []
    """Newest first."""


class RedeliverRequest(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Send one delivery again (now, signed anew, with the same `webhook-id`)."""

    tenant_id: str
    endpoint_id: str
    delivery_id: str


class RedeliverReply(msgspec.Struct, kw_only=True, omit_defaults=True):
    delivery: WebhookDelivery | None = None
    """Absent when the tenant has no such delivery."""


MANAGEMENT_TYPES: dict[str, type[msgspec.Struct]] = {
    "CreateWebhookRequest": CreateWebhookRequest,
    "CreateWebhookReply": CreateWebhookReply,
    "ListWebhooksRequest": ListWebhooksRequest,
    "ListWebhooksReply": ListWebhooksReply,
    "DeleteWebhookRequest": DeleteWebhookRequest,
    "DeleteWebhookReply": DeleteWebhookReply,
    "RotateWebhookSecretRequest": RotateWebhookSecretRequest,
    "RotateWebhookSecretReply": RotateWebhookSecretReply,
    "EnableWebhookRequest": EnableWebhookRequest,
    "EnableWebhookReply": EnableWebhookReply,
    "ListDeliveriesRequest": ListDeliveriesRequest,
    "ListDeliveriesReply": ListDeliveriesReply,
    "RedeliverRequest": RedeliverRequest,
    "RedeliverReply": RedeliverReply,
}
"""Every request and reply on `webhooks.*`."""


def body_of(event_type: str) -> type[WebhookBody] | None:
    """The body type of an event type an endpoint can subscribe to (None for any other)."""
    return WEBHOOK_BODIES.get(event_type)  # type: ignore[call-overload]
