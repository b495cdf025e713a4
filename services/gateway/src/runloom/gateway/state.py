"""What every route needs: settings, NATS, JetStream, the event log and the Postgres pool."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import asyncpg
from fastapi import Request
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from runloom.runtime.config import Settings
from runloom.runtime.eventlog import EventLog


@dataclass
class GatewayState:
    settings: Settings
    nc: NATS
    js: JetStreamContext
    pool: asyncpg.Pool
    log: EventLog
    extras: dict[str, Any] = field(default_factory=dict)
    """Per-feature singletons (the SSE fan-out hub, ...), keyed by feature name."""


def get_state(request: Request) -> GatewayState:
    return request.app.state.runloom  # type: ignore[no-any-return]
