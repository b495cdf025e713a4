"""What two or more services need at run time: config, the bus, the event log, declared
consumers, Postgres, the run-state fold, the service frame and telemetry.

Modules: `config`, `bus` (connect, provision, publish), `consumer` (declared consumers and
their serve loop), `responder` (the request/reply operations a service answers, in a queue
group), `request` (the one requester), `eventlog` (append in order, at most once; read),
`runstate` (the fold of a run's events), `db`, `roles`, `release`, `service`, `management`,
`telemetry`, `metrics`, `logging`, `retry` (the pause between attempts).

The names re-exported here are the ones two or more services use. What one service alone
uses lives in that service: the gateway's tables (the event archive, the runs and
deliverables read models, tenants and API keys) are `runloom.gateway.store`.
"""

from runloom.runtime.bus import PoisonMessage
from runloom.runtime.config import Settings
from runloom.runtime.consumer import Consumer, Delivery, Lock
from runloom.runtime.eventlog import EventLog, RunClosed
from runloom.runtime.responder import Responder, Route
from runloom.runtime.retry import Backoff
from runloom.runtime.runstate import RunState, fold, snapshot
from runloom.runtime.service import ServiceContext

__all__ = [
    "Backoff",
    "Consumer",
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
    "fold",
    "snapshot",
]
