"""One request to billing over core NATS, its failures mapped to the client's error types."""

from __future__ import annotations

from typing import TypeVar

import msgspec
import nats.errors
from nats.aio.client import Client as NATS
from runloom.contracts.headers import Header
from runloom.runtime.telemetry import producer_span

UNAVAILABLE = "unavailable"
"""The `Runloom-Error` of a request billing could not serve (its database is away)."""

R = TypeVar("R", bound=msgspec.Struct)
_encoder = msgspec.json.Encoder()


class BillingUnavailable(Exception):
    """Billing did not answer (no replica, a timeout) or could not serve; try again later."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


class MeteringError(Exception):
    """Billing refused a request as invalid (a bug on the caller's side, not an outage)."""


async def ask(
    nc: NATS,
    subject: str,
    request: msgspec.Struct | bytes,
    reply_type: type[R],
    *,
    timeout_s: float,
    message_id: str | None = None,
    conversation_id: str | None = None,
) -> R:
    """Send one request and decode billing's reply.

    Raises:
        BillingUnavailable: no replica, no answer in `timeout_s`, or `Runloom-Error: unavailable`.
        MeteringError: billing refused the request as invalid.
    """
    payload = request if isinstance(request, bytes) else _encoder.encode(request)
    try:
        headers: dict[str, str] = {}
        with producer_span(
            subject, headers, message_id=message_id, conversation_id=conversation_id
        ):
            msg = await nc.request(subject, payload, timeout=timeout_s, headers=headers)
    except nats.errors.NoRespondersError:
        raise BillingUnavailable("no billing replica is running") from None
    except (nats.errors.Error, TimeoutError) as exc:
        raise BillingUnavailable(f"billing did not answer ({type(exc).__name__})") from None
    error = (msg.headers or {}).get(Header.ERROR)
    if error is None:
        return msgspec.json.decode(msg.data, type=reply_type)
    if error != UNAVAILABLE:
        raise MeteringError(f"billing rejected {subject}: {error}")
    raise BillingUnavailable("billing cannot reach its database")
