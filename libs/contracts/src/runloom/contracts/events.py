"""Run events: the envelope and one payload type per event type.

This module is the single source of every run event on the wire. JSON Schema, TypeScript
and AsyncAPI are generated from it (`make contracts`); never mirror these types by hand.

An event is stored on its run's subject (see `subjects.run_events`) as the JSON encoding of
`Event`. Its `data` holds the payload of its `type`, as given by `EVENT_TYPES`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import msgspec
from runloom.contracts.content import ContentModel
from runloom.contracts.kinds import DEFAULT_SKILL, DeliverableKind, QueueReason, UsageKind
from runloom.contracts.types import InvalidValue, RunId, Text, Usd, UtcTime

SCHEMA_VERSION = 1

EventType = Literal[
    "run.created",
    "run.queued",
    "run.started",
    "plan.proposed",
    "plan.revised",
    "step.started",
    "step.progress",
    "step.completed",
    "step.failed",
    "message.delta",
    "tool.called",
    "tool.result",
    "source.found",
    "source.failed",
    "usage.recorded",
    "budget.warning",
    "billing.waiting",
    "billing.resumed",
    "rate_limited",
    "clarification.requested",
    "clarification.answered",
    "cancel.requested",
    "content.stored",
    "deliverable.requested",
    "deliverable.progress",
    "deliverable.ready",
    "deliverable.failed",
    "run.completed",
    "run.failed",
    "run.cancelled",
    "run.budget_stopped",
]
"""Every event type the contract defines (`EVENT_TYPES` holds the payload of each)."""

OPEN_ENUM = "x-open-enum"
"""JSON Schema keyword of an enum that grows: a reader skips a value it does not know (so
`compat` lets it gain values)."""


class Event(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The envelope of every run event.

    `type` fixes the shape of `data`. A reader built before a type was added decodes it all the
    same (`decode_event`) and skips it: no fold acts on a type it does not know."""

    id: str
    """Unique, lexicographically sortable (ULID)."""
    run_id: RunId
    tenant_id: str
    seq: int
    """Dense per-run sequence: 1, 2, 3 ... with no gap."""
    type: Annotated[EventType, msgspec.Meta(extra_json_schema={OPEN_ENUM: True})]
    time: UtcTime
    """When the event was appended (RFC 3339, UTC)."""
    producer: str
    """Service (and replica) that wrote the event, e.g. `orchestrator/3f2a`."""
    causation_id: str | None = None
    """Id of the event or command that caused this one."""
    trace: str | None = None
    """W3C traceparent of the span that wrote the event."""
    data: dict[str, Any] = {}


# ---------------------------------------------------------------------------------------------
# Shared pieces


class PlanStep(msgspec.Struct, kw_only=True, omit_defaults=True):
    step_id: str
    title: str
    kind: str = "research"
    """research | write | deliver"""
    parallel_group: int | None = None
    """Steps with the same group run in parallel (sub-agents)."""


class Usage(msgspec.Struct, kw_only=True, omit_defaults=True):
    input_tokens: int = 0
    output_tokens: int = 0
    tool_calls: int = 0


class ArtifactRef(msgspec.Struct, kw_only=True, omit_defaults=True):
    artifact_id: str
    format: str
    """md | html | pdf | docx | zip | pptx"""
    media_type: str
    file_name: str
    size: int
    sha256: str
    object_name: str | None = None
    """Where the bytes are in the `artifacts` object store (older events: `sha256-<sha256>`)."""


# ---------------------------------------------------------------------------------------------
# Payloads, one per event type


class RunCreated(msgspec.Struct, kw_only=True, omit_defaults=True):
    question: Text
    skill: str = DEFAULT_SKILL
    budget_usd: Usd | None = None
    options: dict[str, Any] = {}
    title: Text | None = None
    idempotency_key: Text | None = None


class RunQueued(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The run waits for room to start, in its tenant's queue; written again when its place
    has moved well forward. Ended by `run.started` (or by a cancel: `run.cancelled`)."""

    position: int
    """Its place in its tenant's queue: 1 starts next."""
    reason: QueueReason
    running: int = 0
    """Runs of the tenant working when this was written."""
    limit: int | None = None
    """The tenant's concurrent runs."""


class RunStarted(msgspec.Struct, kw_only=True, omit_defaults=True):
    worker: str
    attempt: int = 1
    """1 on the first start; more when another replica took the run over."""


class PlanProposed(msgspec.Struct, kw_only=True, omit_defaults=True):
    steps: list[PlanStep]
    rationale: str | None = None


class PlanRevised(msgspec.Struct, kw_only=True, omit_defaults=True):
    steps: list[PlanStep]
    reason: str


class StepStarted(msgspec.Struct, kw_only=True, omit_defaults=True):
    step_id: str
    title: str | None = None
    agent: str | None = None


class StepProgress(msgspec.Struct, kw_only=True, omit_defaults=True):
    step_id: str
    message: str
    fraction: float | None = None


class StepCompleted(msgspec.Struct, kw_only=True, omit_defaults=True):
    step_id: str
    summary: str | None = None
    source_count: int | None = None


class StepFailed(msgspec.Struct, kw_only=True, omit_defaults=True):
    step_id: str
    error: str
    reason: str = "error"
    """error | no_results | provider_error | cancelled | skipped"""
    retryable: bool = False


class MessageDelta(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Coalesced tokens of a streamed text (the report being written)."""

    stream: str
    """Which text this belongs to, e.g. `report`."""
    text: str
    index: int
    """Position of this delta in its stream: 0, 1, 2 ..."""
    section_id: str | None = None


class ToolCalled(msgspec.Struct, kw_only=True, omit_defaults=True):
    call_id: str
    tool: str
    arguments: dict[str, Any] = {}
    step_id: str | None = None


class ToolResult(msgspec.Struct, kw_only=True, omit_defaults=True):
    call_id: str
    tool: str
    ok: bool = True
    summary: str | None = None
    result_count: int | None = None
    error: str | None = None
    step_id: str | None = None


class SourceFound(msgspec.Struct, kw_only=True, omit_defaults=True):
    source_id: str
    title: str
    passage: str
    document_id: str | None = None
    url: str | None = None
    step_id: str | None = None
    score: float | None = None


class SourceFailed(msgspec.Struct, kw_only=True, omit_defaults=True):
    reason: str
    url: str | None = None
    document_id: str | None = None
    step_id: str | None = None


class UsageRecorded(msgspec.Struct, kw_only=True, omit_defaults=True):
    usage_id: str
    """Stable id of the metered call; the ledger counts each once."""
    kind: UsageKind
    provider: str | None = None
    model: str | None = None
    tool: str | None = None
    usage: Usage = msgspec.field(default_factory=Usage)
    cost_usd: float = 0.0
    reservation_id: str | None = None
    step_id: str | None = None


class BudgetWarning(msgspec.Struct, kw_only=True, omit_defaults=True):
    scope: str
    """run | tenant"""
    spent_usd: float
    budget_usd: float
    fraction: float


class RateLimited(msgspec.Struct, kw_only=True, omit_defaults=True):
    provider: str
    retry_at: UtcTime
    """When the next attempt starts."""
    retry_after_s: float
    attempt: int = 1
    step_id: str | None = None


class ClarificationRequested(msgspec.Struct, kw_only=True, omit_defaults=True):
    question: str
    reason: str | None = None
    timeout_s: float | None = None
    deadline: UtcTime | None = None


class ClarificationAnswered(msgspec.Struct, kw_only=True, omit_defaults=True):
    answer: Text


class CancelRequested(msgspec.Struct, kw_only=True, omit_defaults=True):
    reason: Text | None = None
    requested_by: str | None = None


class DeliverableRequested(msgspec.Struct, kw_only=True, omit_defaults=True):
    kind: DeliverableKind
    job_id: str
    content_hash: str
    formats: list[str] = []


class DeliverableProgress(msgspec.Struct, kw_only=True, omit_defaults=True):
    kind: DeliverableKind
    job_id: str
    message: str
    attempt: int = 1
    fraction: float | None = None
    max_attempts: int | None = None
    """How many attempts the job gets in all."""


class DeliverableReady(msgspec.Struct, kw_only=True, omit_defaults=True):
    kind: DeliverableKind
    job_id: str
    artifacts: list[ArtifactRef]
    attempt: int = 1


class DeliverableFailed(msgspec.Struct, kw_only=True, omit_defaults=True):
    kind: DeliverableKind
    job_id: str
    error: str
    attempt: int
    max_attempts: int
    will_retry: bool
    retry_at: UtcTime | None = None


class RunCompleted(msgspec.Struct, kw_only=True, omit_defaults=True):
    partial: bool = False
    missing: list[str] = []
    """What is missing and why, in words a person reads."""
    summary: str | None = None
    spent_usd: float | None = None


class RunFailed(msgspec.Struct, kw_only=True, omit_defaults=True):
    error: str
    reason: str = "error"
    """error | clarification_timeout | internal"""


class RunCancelled(msgspec.Struct, kw_only=True, omit_defaults=True):
    reason: str | None = None


class RunBudgetStopped(msgspec.Struct, kw_only=True, omit_defaults=True):
    scope: str
    """run | tenant"""
    spent_usd: float
    budget_usd: float
    kept: list[str] = []
    """What was produced before the stop and stays available."""


class ContentStored(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The report's content model, durably stored, from which every deliverable renders."""

    content_hash: str
    content: ContentModel


class BillingWaiting(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Spending is paused because billing does not answer (fail closed)."""

    message: str
    since: UtcTime


class BillingResumed(msgspec.Struct, kw_only=True, omit_defaults=True):
    waited_s: float


EVENT_TYPES: dict[EventType, type[msgspec.Struct]] = {
    "run.created": RunCreated,
    "run.queued": RunQueued,
    "run.started": RunStarted,
    "plan.proposed": PlanProposed,
    "plan.revised": PlanRevised,
    "step.started": StepStarted,
    "step.progress": StepProgress,
    "step.completed": StepCompleted,
    "step.failed": StepFailed,
    "message.delta": MessageDelta,
    "tool.called": ToolCalled,
    "tool.result": ToolResult,
    "source.found": SourceFound,
    "source.failed": SourceFailed,
    "usage.recorded": UsageRecorded,
    "budget.warning": BudgetWarning,
    "billing.waiting": BillingWaiting,
    "billing.resumed": BillingResumed,
    "rate_limited": RateLimited,
    "clarification.requested": ClarificationRequested,
    "clarification.answered": ClarificationAnswered,
    "cancel.requested": CancelRequested,
    "content.stored": ContentStored,
    "deliverable.requested": DeliverableRequested,
    "deliverable.progress": DeliverableProgress,
    "deliverable.ready": DeliverableReady,
    "deliverable.failed": DeliverableFailed,
    "run.completed": RunCompleted,
    "run.failed": RunFailed,
    "run.cancelled": RunCancelled,
    "run.budget_stopped": RunBudgetStopped,
}

TERMINAL_TYPES: frozenset[EventType] = frozenset(
    {"run.completed", "run.failed", "run.cancelled", "run.budget_stopped"}
)


_encoder = msgspec.json.Encoder()
_event_decoder = msgspec.json.Decoder(Event)


class _AnyTypeEvent(Event, kw_only=True, omit_defaults=True):
    """`Event` whose `type` may be one this version does not know (added by a later one)."""

    type: str  # type: ignore[assignment]


_any_type_decoder = msgspec.json.Decoder(_AnyTypeEvent)
_EVENT_FIELDS = Event.__struct_fields__


class UnknownEventType(ValueError):
    pass


def encode_event(event: Event) -> bytes:
    """The stored form of an event; InvalidValue if the stores could not hold it (a NUL
    character or a lone surrogate anywhere in it): the log refuses it before it is appended."""
    try:
        raw = _encoder.encode(event)
    except UnicodeEncodeError as exc:
        raise InvalidValue(f"event {event.type} of {event.run_id} holds a lone surrogate") from exc
    if b"\\u0000" in raw and _NUL_ESCAPE.search(raw):
        raise InvalidValue(
            f"event {event.type} of {event.run_id} holds a NUL character (\\u0000), which "
            "PostgreSQL text and jsonb cannot store"
        )
    return raw


_NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")
"""A JSON escape of NUL (an odd number of backslashes before `u0000`)."""


def decode_event(raw: bytes | str) -> Event:
    """Decode an envelope; raises msgspec.ValidationError / DecodeError on malformed input.

    An envelope of a type this version does not know decodes with that `type` (a string
    outside `EventType`): readers skip it, and `payload_of` raises `UnknownEventType`."""
    try:
        return _event_decoder.decode(raw)
    except msgspec.ValidationError:
        return _as_event(_any_type_decoder.decode(raw))  # the same error if not the type


def event_from(obj: Any) -> Event:
    """`decode_event` for an envelope already parsed from JSON (e.g. a page of history)."""
    try:
        return msgspec.convert(obj, Event)
    except msgspec.ValidationError:
        return _as_event(msgspec.convert(obj, _AnyTypeEvent))


def _as_event(later: _AnyTypeEvent) -> Event:
    return Event(**{f: getattr(later, f) for f in _EVENT_FIELDS})


def payload_of(event: Event) -> msgspec.Struct:
    """The typed payload of an event (validates `data` against its type)."""
    cls = EVENT_TYPES.get(event.type)
    if cls is None:
        raise UnknownEventType(f"unknown event type {event.type!r}")
    return msgspec.convert(event.data, cls)


def data_of(payload: msgspec.Struct) -> dict[str, Any]:
    """A payload as the plain `data` dict of an envelope."""
    return msgspec.to_builtins(payload)  # type: ignore[no-any-return]


def type_of(payload: msgspec.Struct | type[msgspec.Struct]) -> EventType:
    """The event type name of a payload class or instance."""
    cls = payload if isinstance(payload, type) else type(payload)
    return _TYPE_BY_CLASS[cls]


_TYPE_BY_CLASS: dict[type[msgspec.Struct], EventType] = {
    cls: name for name, cls in EVENT_TYPES.items()
}
