"""The gateway's client of the webhooks service: `webhooks.*` over NATS request/reply.

The webhooks service owns endpoints and deliveries; the gateway never reads its tables. When
it does not answer, a 503 problem with Retry-After; a URL it refuses, a 422 problem saying
why. `check_run_webhook` and `for_run` serve `webhook` on POST /v1/runs.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec
import nats.errors
from runloom.contracts import subjects
from runloom.contracts.headers import Header
from runloom.contracts.ids import derived_ulid, new_id
from runloom.contracts.webhooks import (
    WEBHOOK_EVENT_TYPES,
    CreateWebhookReply,
    CreateWebhookRequest,
)
from runloom.gateway.auth import Principal
from runloom.gateway.problems import Problem
from runloom.gateway.state import GatewayState
from runloom.runtime.telemetry import inject_headers

R = TypeVar("R", bound=msgspec.Struct)

ASK_TIMEOUT_S = 10.0
"""A URL check resolves the host name: seconds, not minutes."""
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


async def ask(state: GatewayState, subject: str, body: msgspec.Struct, reply: type[R]) -> R:
    try:
        msg = await state.nc.request(
            subject,
            msgspec.json.encode(body),
            timeout=ASK_TIMEOUT_S,
            headers=inject_headers() or None,
        )
    except nats.errors.NoRespondersError as exc:
        raise unavailable("the webhooks service is not running") from exc
    except (TimeoutError, nats.errors.TimeoutError) as exc:
        raise unavailable(f"the webhooks service did not answer in {ASK_TIMEOUT_S:.0f} s") from exc
    except nats.errors.Error as exc:
        raise unavailable(f"NATS: {type(exc).__name__}") from exc
    error = (msg.headers or {}).get(Header.ERROR)
    if error:
        if error == "unavailable":
            raise unavailable("the webhooks service could not reach its database")
        raise RuntimeError(f"{subject} refused the gateway's request: {error}")
    return msgspec.json.decode(msg.data, type=reply)


def refused(reply: CreateWebhookReply, field: str = "url") -> Problem:
    return Problem(
        422,
        "Webhook URL refused",
        f"{field}: {reply.detail}",
        type="https://runloom.dev/problems/webhook-url-refused",
        reason=reply.refused,
    )


# -- a run's own webhook (POST /v1/runs `webhook`) ---------------------------------------------


async def check_run_webhook(state: GatewayState, who: Principal, url: str | None) -> None:
    """Refuse a run's webhook URL before the run stores anything (422 saying why)."""
    if url is None:
        return
    reply = await ask(
        state,
        subjects.WEBHOOKS_CREATE,
        CreateWebhookRequest(
            tenant_id=who.tenant_id,
            endpoint_id=new_id("whk"),
            url=url,
            events=list(WEBHOOK_EVENT_TYPES),
            check_only=True,
        ),
        CreateWebhookReply,
    )
    if reply.refused is not None:
        raise refused(reply, "webhook")


async def for_run(
    state: GatewayState, who: Principal, run_id: str, url: str | None
) -> dict[str, Any] | None:
    """The run's own endpoint (every subscribable event of this run only), created before its
    first event; idempotent by run, so a replay of the request gets the same id and secret."""
    if url is None:
        return None
    reply = await ask(
        state,
        subjects.WEBHOOKS_CREATE,
        CreateWebhookRequest(
            tenant_id=who.tenant_id,
            endpoint_id="whk_" + derived_ulid(f"webhook:{run_id}"),
            url=url,
            events=list(WEBHOOK_EVENT_TYPES),
            run_id=run_id,
        ),
        CreateWebhookReply,
    )
    if reply.refused is not None or reply.endpoint is None:
        raise refused(reply, "webhook")
    return {"id": reply.endpoint.id, "url": reply.endpoint.url, "secret": reply.secret}
