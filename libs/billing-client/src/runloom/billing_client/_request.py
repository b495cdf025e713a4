"""Billing's failures in the client's terms: the one requester's `RequestFailed` mapped to
`BillingUnavailable` (try again later) or `MeteringError` (the request is invalid)."""

from __future__ import annotations

from typing import TypeVar

import msgspec
from nats.aio.client import Client as NATS
from runloom.contracts.operations import Operation
from runloom.runtime.request import RequestFailed
from runloom.runtime.request import ask as _ask

Q = TypeVar("Q", bound=msgspec.Struct)
R = TypeVar("R", bound=msgspec.Struct)


class BillingUnavailable(Exception):
    """Billing did not answer (no replica, a timeout) or could not serve; try again later."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


class MeteringError(Exception):
    """Billing refused a request as invalid (a bug on the caller's side, not an outage)."""


async def ask(
    nc: NATS,
    op: Operation[Q, R],
    request: Q,
    *,
    timeout_s: float,
    message_id: str | None = None,
    conversation_id: str | None = None,
) -> R:
    """Send one request to billing and decode its reply.

    Raises:
        BillingUnavailable: no replica, no answer in `timeout_s`, or `Runloom-Error: unavailable`.
        MeteringError: billing refused the request as invalid.
    """
    try:
        return await _ask(
            nc,
            op,
            request,
            timeout_s=timeout_s,
            message_id=message_id,
            conversation_id=conversation_id,
        )
    except RequestFailed as failed:
        if failed.retryable:
            raise BillingUnavailable(failed.detail) from None
        raise MeteringError(failed.detail) from None
