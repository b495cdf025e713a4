"""What a phase of a run (`research`, `writing`, `delivery`) may use: a narrow protocol.

A phase gets a `RunContext`, not the driver: who the run is, its folded state, its events so
far, and four verbs (emit once, catch up, read and save a checkpoint). It returns what it
produced; the driver (`run.RunDriver`) decides what happens next. The phases do not import
the driver, and the driver is the only implementation.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import asyncpg
import msgspec
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from runloom.billing_client import Meter
from runloom.contracts.events import Event
from runloom.orchestrator.config import OrchestratorOptions
from runloom.orchestrator.providers import Provider
from runloom.runtime.eventlog import EventLog
from runloom.runtime.runstate import RunState


@dataclass
class Services:
    """What a run needs from its replica."""

    nc: NATS
    js: JetStreamContext
    pool: asyncpg.Pool
    log: EventLog
    meter: Meter
    provider: Provider
    options: OrchestratorOptions
    worker: str


class RunContext(Protocol):
    """The run a phase works on."""

    @property
    def run_id(self) -> str: ...

    @property
    def tenant_id(self) -> str: ...

    @property
    def svc(self) -> Services:
        """The replica's connections, provider, meter and options."""
        ...

    @property
    def state(self) -> RunState:
        """The run's events folded (`runstate.fold`), as of the last `catch_up`."""
        ...

    @property
    def existing(self) -> Mapping[str, Event]:
        """The run's stored events by id."""
        ...

    @property
    def wakeup(self) -> asyncio.Event:
        """Set when the run's subject has news (then `catch_up` reads it)."""
        ...

    def eid(self, key: str) -> str:
        """The deterministic id of the run's event named `key`."""
        ...

    async def emit(
        self, payload: msgspec.Struct, key: str, *, cause: str | Event | None = None
    ) -> Event:
        """Append once: an event whose id is already stored is returned as it is."""
        ...

    async def catch_up(self) -> RunState:
        """Read the events stored since the last read and fold them in."""
        ...

    async def checkpoint(self, key: str) -> Any:
        """A value saved earlier under `key` (by this or a previous owner), or None."""
        ...

    async def save(self, key: str, value: Any) -> None:
        """Save a value under `key` once (the first save wins)."""
        ...
