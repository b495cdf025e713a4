"""Runloom wire contracts: the single Python source of every event, command, job and subject.

Modules: `events` (the envelope and every payload), `commands` (commands, jobs, billing
requests, dead letters), `content` (the content model), `subjects` (stream and subject names),
`headers`, `kinds` (closed sets of names), `types` (validated values), `ids`; `codegen` and
`compat` generate and check JSON Schema, TypeScript and AsyncAPI.
"""

from runloom.contracts.events import (
    EVENT_TYPES,
    TERMINAL_TYPES,
    Event,
    EventType,
    decode_event,
    event_from,
    payload_of,
    type_of,
)
from runloom.contracts.headers import Header
from runloom.contracts.ids import derived_ulid, new_id, ulid
from runloom.contracts.kinds import (
    DELIVERABLE_KINDS,
    RUN_STATUSES,
    TERMINAL_STATUS,
    DeliverableKind,
    RunStatus,
    UsageKind,
)
from runloom.contracts.types import InvalidValue, UtcTime, now, rfc3339

__all__ = [
    "DELIVERABLE_KINDS",
    "EVENT_TYPES",
    "RUN_STATUSES",
    "TERMINAL_STATUS",
    "TERMINAL_TYPES",
    "DeliverableKind",
    "Event",
    "EventType",
    "Header",
    "InvalidValue",
    "RunStatus",
    "UsageKind",
    "UtcTime",
    "decode_event",
    "derived_ulid",
    "event_from",
    "new_id",
    "now",
    "payload_of",
    "rfc3339",
    "type_of",
    "ulid",
]
