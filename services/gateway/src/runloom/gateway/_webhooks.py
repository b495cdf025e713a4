"""The gateway's client of the webhooks service: `webhooks.*` over NATS request/reply.

The webhooks service owns endpoints and deliveries; the gateway never reads its tables. Every
request goes through the one requester (`runtime.request.ask`) with the operation's timeout
(`contracts.operations.WEBHOOKS_*`). When it does not answer, a 503 problem with Retry-After;
a URL it refuses, a 422 problem saying why. `check_run_webhook` and `for_run` serve `webhook`
on POST /v1/runs.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec
from runloom.contracts import operations as ops
from runloom.contracts.ids import derived_ulid, new_id
from runloom.contracts.operations import Operation
from runloom.contracts.webhooks import (
    WEBHOOK_EVENT_TYPES,
    CreateWebhookReply,
    CreateWebhookRequest,
)
from runloom.gateway.auth import Principal
from runloom.gateway.problems import Problem, answer_of
from runloom.gateway.state import GatewayState

Q = TypeVar("Q", bound=msgspec.Struct)
R = TypeVar("R", bound=msgspec.Struct)

RETRY_AFTER_S = 5
MAX_URL_CHARS = 2048


def unavailable(why: str) -> Problem:
    problem = Problem(
        503,
        "Webhooks unavailable",
        f"Webhooks cannot be managed right now ({why}); retry in {RETRY_AFTER_S} s.",
        type="https://runloom.dev/problems/webhooks-unavailable",
    )
    problem.headers["Retry-After"] = str(RETRY_AFTER_S)
    return problem


async def ask(state: GatewayState, op: Operation[Q, R], request: Q) -> R:
    """The webhooks service's reply (the one requester); a 503 problem when there is none."""
    return await answer_of(state.nc, op, request, unavailable)


def refused(reply: CreateWebhookReply, field: str = "url") -> Problem:
    return Problem(
        422,
        "Webhook URL refused",
        f"{field}: {reply.detail}",
        type="https://runloom.dev/problems/webhook-url-refused",
        reason=reply.refused,
    )


# -- a run's own webhook (POST /v1/runs `webhook`) ---------------------------------------------


async def create(
    state: GatewayState,
    who: Principal,
    url: str,
    events: list[str],
    *,
    endpoint_id: str | None = None,
    description: str | None = None,
    run_id: str | None = None,
    check_only: bool = False,
    field: str = "url",
) -> CreateWebhookReply:
    """Register an endpoint (or only check its URL); a refused URL raises a 422 problem."""
    reply = await ask(
        state,
        ops.WEBHOOKS_CREATE,
        CreateWebhookRequest(
            tenant_id=who.tenant_id,
            endpoint_id=endpoint_id or new_id("whk"),
            url=url,
            events=events,  # type: ignore[arg-type]
            description=description,
            run_id=run_id,
            check_only=check_only,
        ),
    )
    if reply.refused is not None or (reply.endpoint is None and not check_only):
        raise refused(reply, field)
    return reply


# -- a run's own webhook (POST /v1/runs `webhook`) ---------------------------------------------


async def check_run_webhook(state: GatewayState, who: Principal, url: str | None) -> None:
    """Refuse a run's webhook URL before the run stores anything (422 saying why)."""
    if url is not None:
        await create(state, who, url, list(WEBHOOK_EVENT_TYPES), check_only=True, field="webhook")


async def for_run(
    state: GatewayState, who: Principal, run_id: str, url: str | None
) -> dict[str, Any] | None:
    """The run's own endpoint (every subscribable event of this run only), created before its
    first event; idempotent by run, so a replay of the request gets the same id and secret."""
    if url is None:
        return None
    reply = await create(
        state,
        who,
        url,
        list(WEBHOOK_EVENT_TYPES),
        endpoint_id="whk_" + derived_ulid(f"webhook:{run_id}"),
        run_id=run_id,
        field="webhook",
    )
    assert reply.endpoint is not None
    return {"id": reply.endpoint.id, "url": reply.endpoint.url, "secret": reply.secret}
