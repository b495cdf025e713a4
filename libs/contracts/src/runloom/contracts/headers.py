"""Runloom's own NATS header names (NATS's own are `nats.js.api.Header`)."""

from __future__ import annotations

from enum import StrEnum


class Header(StrEnum):
    """Headers Runloom sets on its messages, beside `Nats-Msg-Id` and `traceparent`."""

    EVENT_TYPE = "Runloom-Event-Type"
    """On a run event: its `type`, so a consumer can skip events without decoding them."""
    ERROR = "Runloom-Error"
    """On a billing or corpus reply: why the request was refused (`invalid`) or not served
    (`unavailable`)."""
