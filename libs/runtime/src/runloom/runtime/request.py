"""The one requester: ask an operation of `contracts.operations` over core NATS.

Every request goes out the same way: in a PRODUCER span whose context rides in the headers
(the responder continues the trace), with the operation's timeout unless the caller gives
one, and every way it can fail ends in one exception, `RequestFailed`, that says why and
whether a retry may help. Callers map it to their own terms (a 503 with Retry-After, a
visible wait on the run, or going without).
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

import msgspec
import nats.errors
from nats.aio.client import Client as NATS
from runloom.contracts.headers import Header
from runloom.contracts.operations import UNAVAILABLE, Answerer, Operation
from runloom.runtime.telemetry import producer_span

Q = TypeVar("Q", bound=msgspec.Struct)
R = TypeVar("R", bound=msgspec.Struct)

Why = Literal["no_responders", "timeout", "disconnected", "unavailable", "refused"]

_encoder = msgspec.json.Encoder()
_NOUN: dict[Answerer, str] = {
    "billing": "billing",
    "orchestrator": "the orchestrator",
    "deliverables": "deliverables",
    "webhooks": "webhooks",
    "gateway": "the gateway",
    "lifecycle": "the lifecycle service",
}
"""How a failure names the answering service (a test checks every `Answerer` has one)."""


class RequestFailed(Exception):
    """A request got no usable reply. `why`: nobody serves the subject (`no_responders`), no
    answer in time (`timeout`), the connection is closed or draining (`disconnected`), the
    answering service could not serve now (`unavailable`), or it refused the request as
    invalid (`refused`, the only one a retry cannot mend)."""

    def __init__(self, op: Operation[Any, Any], why: Why, detail: str) -> None:
        super().__init__(detail)
        self.op = op
        self.why: Why = why
        self.detail = detail

    @property
    def retryable(self) -> bool:
        return self.why != "refused"


async def ask(
    nc: NATS,
    op: Operation[Q, R],
    request: Q,
    *,
    timeout_s: float | None = None,
    message_id: str | None = None,
    conversation_id: str | None = None,
) -> R:
    """Send `request` on the operation's subject and decode the reply as its reply type.

    `message_id` (the request's idempotency key) and `conversation_id` (the run id) label the
    span. Raises `RequestFailed`."""
    timeout = op.timeout_s if timeout_s is None else timeout_s
    who = _NOUN.get(op.answered_by, op.answered_by)
    try:
        headers: dict[str, str] = {}
        with producer_span(
            op.subject, headers, message_id=message_id, conversation_id=conversation_id
        ):
            msg = await nc.request(
                op.subject, _encoder.encode(request), timeout=timeout, headers=headers
            )
    except nats.errors.NoRespondersError:
        raise RequestFailed(
            op, "no_responders", f"no {op.answered_by} replica is running"
        ) from None
    except (TimeoutError, nats.errors.TimeoutError):
        raise RequestFailed(op, "timeout", f"{who} did not answer within {timeout:g} s") from None
    except nats.errors.Error as exc:  # the connection is closed or draining
        raise RequestFailed(op, "disconnected", f"NATS: {type(exc).__name__}") from None
    error = (msg.headers or {}).get(Header.ERROR)
    if error is None:
        return msgspec.json.decode(msg.data, type=op.reply)
    if error == UNAVAILABLE:
        raise RequestFailed(op, "unavailable", f"{who} cannot reach its database")
    raise RequestFailed(op, "refused", f"{who} refused {op.subject}: {error}")
