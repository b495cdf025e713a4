"""What two or more services need at run time: config, the bus, the event log, declared
consumers, Postgres, the run-state fold, the service frame and telemetry.

Modules: `config`, `bus` (connect, provision, publish), `consumer` (declared consumers and
their serve loop), `responder` (request/reply subjects served in a queue group), `eventlog`
(append in order, at most once; read), `runstate` (the fold of a run's events), `db`,
`service`, `telemetry`, `logging`, `retry` (the pause between attempts).

What one service alone uses lives in that service: the gateway's tables (the event archive,
the runs and deliverables read models, tenants and API keys) are `runloom.gateway.store`.
"""

from runloom.runtime.bus import PoisonMessage
from runloom.runtime.config import Settings
from runloom.runtime.consumer import Consumer, ConsumerStats, Delivery, Lock
from runloom.runtime.eventlog import (
    AppendConflict,
    EventLog,
    RunClosed,
    StoredEvent,
    StoreUnavailable,
    Tail,
)
from runloom.runtime.responder import Responder, Route
from runloom.runtime.retry import Backoff
from runloom.runtime.runstate import RunState, fold, snapshot
from runloom.runtime.service import ServiceContext

__all__ = [
    "AppendConflict",
    "Backoff",
    "Consumer",
    "ConsumerStats",
    "Delivery",
    "EventLog",
    "Lock",
    "PoisonMessage",
    "Responder",
    "Route",
    "RunClosed",
    "RunState",
    "ServiceContext",
    "Settings",
    "StoreUnavailable",
    "StoredEvent",
    "Tail",
    "fold",
    "snapshot",
]
