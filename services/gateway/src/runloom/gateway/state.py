"""What every route needs: settings, NATS, JetStream, the event log, the Postgres pool, and the
streaming core and artifact bucket the lifespan wires once."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
from fastapi import Request
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.object_store import ObjectStore
from runloom.gateway._streaming import Streaming
from runloom.runtime.config import Settings
from runloom.runtime.eventlog import EventLog


@dataclass
class GatewayState:
    settings: Settings
    nc: NATS
    js: JetStreamContext
    pool: asyncpg.Pool
    log: EventLog
    streaming: Streaming | None = None
    """Archive consumer, fan-out hub, history and stream tokens (set by the lifespan)."""
    artifacts: ObjectStore | None = None
    """The deliverables' artifact bucket (bound once by the deliverables routes)."""


def get_state(request: Request) -> GatewayState:
    return request.app.state.runloom  # type: ignore[no-any-return]


def streaming(state: GatewayState) -> Streaming:
    """The streaming core; it exists for as long as the app serves."""
    if state.streaming is None:
        raise RuntimeError("the gateway's streaming core is not started")
    return state.streaming
