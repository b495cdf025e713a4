"""A run's state, folded from its events: the one deterministic way to read a run.

`fold(events, state)` is pure: it never changes `state` (it works on a copy), and feeding a
run's events whole or in chunks gives the same result. Events at or below `state.last_seq`
are skipped (a chunk may overlap the previous one), and nothing after the terminal event
counts (the log forbids it; an archive replay must not be able to resurrect a run either).

Every service reads runs through this fold (the orchestrator to resume, the gateway for
snapshots and the read model, the console to render), so it stays generic: it knows the
event types of `runloom.contracts.events` and nothing about who wrote them.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any, Literal, TypeVar

import msgspec
from runloom.contracts.events import (
    TERMINAL_TYPES,
    ArtifactRef,
    ClarificationRequested,
    DeliverableFailed,
    DeliverableProgress,
    DeliverableReady,
    DeliverableRequested,
    Event,
    PlanProposed,
    PlanRevised,
    RateLimited,
    RunCompleted,
    RunQueued,
    SourceFound,
    Usage,
)
from runloom.contracts.kinds import (
    DEFAULT_SKILL,
    STEP_KINDS,
    TERMINAL_STATUS,
    DeliverableKind,
    RunStatus,
    StepKind,
)

StepStatus = Literal["pending", "running", "done", "failed", "skipped"]
DeliverableStatus = Literal["requested", "running", "ready", "failed"]


class StepState(msgspec.Struct, kw_only=True):
    step_id: str
    title: str
    kind: StepKind = "research"
    parallel_group: int | None = None
    status: StepStatus = "pending"
    error: str | None = None
    """Why the step failed or was skipped."""
    source_count: int = 0
    """Sources found by this step (as reported at completion, else as counted)."""


class DeliverableState(msgspec.Struct, kw_only=True):
    kind: DeliverableKind
    job_id: str
    status: DeliverableStatus = "requested"
    attempt: int = 0
    max_attempts: int | None = None
    will_retry: bool = False
    """After a failed attempt: whether another one is coming."""
    artifacts: list[ArtifactRef] = []
    error: str | None = None


class Clarification(msgspec.Struct, kw_only=True):
    """One question the run asked (`clarification.requested`) and its answer, once given."""

    event_id: str
    """The id of the `clarification.requested` event (what an answer's causation_id names)."""
    seq: int
    request: ClarificationRequested
    answer: str | None = None
    answered_seq: int | None = None
    """The seq of the `clarification.answered` event."""


class RunState(msgspec.Struct, kw_only=True):
    run_id: str | None = None
    tenant_id: str | None = None
    status: RunStatus = "created"
    question: str | None = None
    title: str | None = None
    skill: str | None = None
    budget_usd: float | None = None
    options: dict[str, Any] = {}
    steps: list[StepState] = []
    """The plan, in plan order (steps seen only in step.* events are appended)."""
    sources: dict[str, SourceFound] = {}
    report_text: str = ""
    """The `report` stream's message.delta texts joined in index order."""
    report_parts: dict[int, str] = {}
    deliverables: dict[str, DeliverableState] = {}
    content_hash: str | None = None
    spent_usd: float = 0.0
    """Sum of usage.recorded cost_usd, each usage_id counted once."""
    usage: Usage = msgspec.field(default_factory=Usage)
    usage_ids: list[str] = []
    clarification: ClarificationRequested | None = None
    """The pending clarification question, if the run waits for one."""
    queued: RunQueued | None = None
    """Where the run waits to start (position and why), until it starts or ends."""
    clarifications: list[Clarification] = []
    """Every question the run asked, in order, with its answer once given."""
    trace: str | None = None
    """The run's trace (the traceparent its `run.created` carries)."""
    started_trace: str | None = None
    """The traceparent of the latest `run.started` (the attempt before the current one)."""
    cancel_event_id: str | None = None
    """The id of the latest `cancel.requested` (what `run.cancelled` is caused by)."""
    billing_wait: Event | None = None
    """The open `billing.waiting` event, until `billing.resumed` closes it."""
    rate_limited: RateLimited | None = None
    """The latest rate limit, until the run makes progress again."""
    billing_waiting: bool = False
    cancel_requested: bool = False
    partial: bool = False
    missing: list[str] = []
    terminal: Event | None = None
    last_seq: int = 0
    event_count: int = 0
    started_count: int = 0
    """How many run.started events (more than 1: another worker took the run over)."""

    @property
    def ended(self) -> bool:
        return self.terminal is not None

    @property
    def answer(self) -> str | None:
        """The latest answer to one of the run's questions."""
        return next((c.answer for c in reversed(self.clarifications) if c.answer), None)

    def asked(self, event_id: str) -> Clarification | None:
        """The question the `clarification.requested` event `event_id` asked."""
        return next((c for c in self.clarifications if c.event_id == event_id), None)

    def step(self, step_id: str) -> StepState | None:
        for s in self.steps:
            if s.step_id == step_id:
                return s
        return None


def fold(events: Iterable[Event], state: RunState | None = None) -> RunState:
    """The state after `events`, starting from `state` (or an empty run); pure."""
    st = RunState() if state is None else copy.deepcopy(state)
    for ev in events:
        _apply(st, ev)
    return st


def advance(state: RunState, events: Iterable[Event]) -> RunState:
    """`fold` in place, for a reader that owns `state` and follows a run event by event (no
    copy per event); the same transitions, so it reaches the same state as `fold`."""
    for ev in events:
        _apply(state, ev)
    return state


def snapshot(state: RunState) -> dict[str, Any]:
    """The state as plain JSON-able data (for a reset event or an API answer)."""
    out: dict[str, Any] = msgspec.to_builtins(state)
    for internal in ("report_parts", "usage_ids", "billing_wait", "trace", "started_trace"):
        out.pop(internal, None)
    return out


# -- the transitions --------------------------------------------------------------------------


def _apply(st: RunState, ev: Event) -> None:
    if ev.seq <= st.last_seq or st.terminal is not None:
        return
    st.last_seq = ev.seq
    st.event_count += 1
    if st.run_id is None:
        st.run_id = ev.run_id
        st.tenant_id = ev.tenant_id
    handler = _HANDLERS.get(ev.type)
    if handler is not None:
        handler(st, ev)
    if ev.type in TERMINAL_TYPES:
        st.status = TERMINAL_STATUS[ev.type]
        st.terminal = ev
        st.clarification = None
        st.queued = None
        st.rate_limited = None
        st.billing_waiting = False
        st.billing_wait = None


P = TypeVar("P", bound=msgspec.Struct)


def _typed(ev: Event, payload: type[P]) -> P | None:
    """The event's data as its payload type, or None when it does not fit the contract: the
    fold then skips the event's own changes, as it skips a type it does not know."""
    try:
        return msgspec.convert(ev.data, payload)
    except msgspec.ValidationError:
        return None


def _get(data: dict[str, Any], key: str, default: Any = None) -> Any:
    value = data.get(key, default)
    return default if value is None else value


def _running(st: RunState) -> None:
    if st.status in ("created", "queued", "waiting_clarification"):
        st.status = "running"


def _step_kind(value: Any) -> StepKind:
    """A plan step's kind (`PlanStep.kind` is free text on the wire; the orchestrator writes
    only these: anything else reads as research)."""
    return value if value in STEP_KINDS else "research"  # type: ignore[no-any-return]


def _step(st: RunState, step_id: str, title: str | None = None) -> StepState:
    s = st.step(step_id)
    if s is None:
        s = StepState(step_id=step_id, title=title or step_id)
        st.steps.append(s)
    return s


def _run_created(st: RunState, ev: Event) -> None:
    d = ev.data
    st.trace = ev.trace
    st.question = d.get("question")
    st.skill = _get(d, "skill", DEFAULT_SKILL)
    st.budget_usd = d.get("budget_usd")
    st.options = dict(_get(d, "options", {}))
    st.title = d.get("title") or st.title


def _run_queued(st: RunState, ev: Event) -> None:
    st.queued = msgspec.convert(ev.data, RunQueued)
    if st.status in ("created", "running"):
        st.status = "queued"


def _run_started(st: RunState, ev: Event) -> None:
    st.started_count += 1
    st.started_trace = ev.trace
    st.queued = None
    if st.clarification is None:
        _running(st)


def _plan(st: RunState, ev: Event) -> None:
    plan: PlanProposed | PlanRevised | None = (
        _typed(ev, PlanRevised) if ev.type == "plan.revised" else _typed(ev, PlanProposed)
    )
    if plan is None:
        return
    old = {s.step_id: s for s in st.steps}
    steps = []
    for p in plan.steps:
        prev = old.get(p.step_id)
        s = StepState(
            step_id=p.step_id,
            title=p.title or p.step_id,
            kind=_step_kind(p.kind),
            parallel_group=p.parallel_group,
        )
        if prev is not None:
            s.status, s.error, s.source_count = prev.status, prev.error, prev.source_count
        steps.append(s)
    # A revision never forgets a step that already ran: it stays, after the new plan.
    kept = {s.step_id for s in steps}
    steps.extend(s for s in st.steps if s.step_id not in kept and s.status != "pending")
    st.steps = steps
    if st.clarification is None:
        _running(st)


def _step_started(st: RunState, ev: Event) -> None:
    d = ev.data
    s = _step(st, d["step_id"], d.get("title"))
    s.status = "running"
    s.error = None
    st.rate_limited = None
    if st.clarification is None:
        _running(st)


def _step_progress(st: RunState, ev: Event) -> None:
    d = ev.data
    s = _step(st, d["step_id"])
    if s.status == "pending":
        s.status = "running"
    st.rate_limited = None


def _step_completed(st: RunState, ev: Event) -> None:
    d = ev.data
    s = _step(st, d["step_id"])
    s.status = "done"
    s.error = None
    if d.get("source_count") is not None:
        s.source_count = d["source_count"]
    st.rate_limited = None


def _step_failed(st: RunState, ev: Event) -> None:
    d = ev.data
    s = _step(st, d["step_id"])
    s.status = "skipped" if d.get("reason") == "skipped" else "failed"
    s.error = d.get("error")
    st.rate_limited = None


def _message_delta(st: RunState, ev: Event) -> None:
    d = ev.data
    st.rate_limited = None
    if d.get("stream") != "report":
        return
    index = int(d["index"])
    if index in st.report_parts:
        return
    st.report_parts[index] = d.get("text", "")
    if index == len(st.report_parts) - 1 and index == max(st.report_parts):
        # Indices 0..index are all present and this one is the last: a plain append.
        st.report_text += st.report_parts[index]
    else:
        st.report_text = "".join(st.report_parts[i] for i in sorted(st.report_parts))


def _source_found(st: RunState, ev: Event) -> None:
    d = ev.data
    source = msgspec.convert(d, SourceFound)
    is_new = source.source_id not in st.sources
    st.sources[source.source_id] = source
    if is_new and source.step_id:
        s = st.step(source.step_id)
        if s is not None and s.status != "done":
            s.source_count += 1


def _usage_recorded(st: RunState, ev: Event) -> None:
    d = ev.data
    usage_id = d.get("usage_id")
    if usage_id is not None:
        if usage_id in st.usage_ids:
            return
        st.usage_ids.append(usage_id)
    st.spent_usd = round(st.spent_usd + float(_get(d, "cost_usd", 0.0)), 10)
    u = _get(d, "usage", {})
    st.usage = Usage(
        input_tokens=st.usage.input_tokens + int(_get(u, "input_tokens", 0)),
        output_tokens=st.usage.output_tokens + int(_get(u, "output_tokens", 0)),
        tool_calls=st.usage.tool_calls + int(_get(u, "tool_calls", 0)),
    )


def _rate_limited(st: RunState, ev: Event) -> None:
    d = ev.data
    st.rate_limited = msgspec.convert(d, RateLimited)


def _clarification_requested(st: RunState, ev: Event) -> None:
    d = ev.data
    st.clarification = msgspec.convert(d, ClarificationRequested)
    st.clarifications.append(Clarification(event_id=ev.id, seq=ev.seq, request=st.clarification))
    st.status = "waiting_clarification"


def _clarification_answered(st: RunState, ev: Event) -> None:
    d = ev.data
    st.clarification = None
    open_ = [c for c in st.clarifications if c.answered_seq is None]
    asked = next((c for c in open_ if c.event_id == ev.causation_id), None)
    if asked is None and open_:
        asked = open_[-1]  # an answer that names no question answers the latest open one
    if asked is not None:
        asked.answer, asked.answered_seq = d.get("answer", ""), ev.seq
    if st.status == "waiting_clarification":
        st.status = "running" if st.started_count else "created"


def _cancel_requested(st: RunState, ev: Event) -> None:
    st.cancel_requested = True
    st.cancel_event_id = ev.id


def _content_stored(st: RunState, ev: Event) -> None:
    d = ev.data
    st.content_hash = d.get("content_hash")


def _deliverable(
    st: RunState,
    p: DeliverableRequested | DeliverableProgress | DeliverableReady | DeliverableFailed,
) -> DeliverableState:
    dv = st.deliverables.get(p.kind)
    if dv is None or dv.job_id != p.job_id:
        dv = DeliverableState(kind=p.kind, job_id=p.job_id)
        st.deliverables[p.kind] = dv
    return dv


def _deliverable_requested(st: RunState, ev: Event) -> None:
    p = _typed(ev, DeliverableRequested)
    if p is not None:
        _deliverable(st, p)


def _deliverable_progress(st: RunState, ev: Event) -> None:
    p = _typed(ev, DeliverableProgress)
    if p is None:
        return
    dv = _deliverable(st, p)
    if dv.status != "ready":
        dv.status = "running"
        dv.attempt = max(dv.attempt, p.attempt)
        dv.will_retry = False
        dv.error = None


def _deliverable_ready(st: RunState, ev: Event) -> None:
    p = _typed(ev, DeliverableReady)
    if p is None:
        return
    dv = _deliverable(st, p)
    dv.status = "ready"
    dv.attempt = max(dv.attempt, p.attempt)
    dv.artifacts = list(p.artifacts)
    dv.will_retry = False
    dv.error = None


def _deliverable_failed(st: RunState, ev: Event) -> None:
    p = _typed(ev, DeliverableFailed)
    if p is None:
        return
    dv = _deliverable(st, p)
    if dv.status == "ready":
        return
    dv.status = "failed"
    dv.attempt = max(dv.attempt, p.attempt)
    dv.max_attempts = p.max_attempts
    dv.will_retry = p.will_retry
    dv.error = p.error


def _billing_waiting(st: RunState, ev: Event) -> None:
    st.billing_waiting = True
    st.billing_wait = ev


def _billing_resumed(st: RunState, ev: Event) -> None:
    st.billing_waiting = False
    st.billing_wait = None


def _run_completed(st: RunState, ev: Event) -> None:
    p = _typed(ev, RunCompleted)
    if p is not None:
        st.partial, st.missing = p.partial, list(p.missing)


_HANDLERS = {
    "run.created": _run_created,
    "run.queued": _run_queued,
    "run.started": _run_started,
    "plan.proposed": _plan,
    "plan.revised": _plan,
    "step.started": _step_started,
    "step.progress": _step_progress,
    "step.completed": _step_completed,
    "step.failed": _step_failed,
    "message.delta": _message_delta,
    "source.found": _source_found,
    "usage.recorded": _usage_recorded,
    "rate_limited": _rate_limited,
    "clarification.requested": _clarification_requested,
    "clarification.answered": _clarification_answered,
    "cancel.requested": _cancel_requested,
    "content.stored": _content_stored,
    "deliverable.requested": _deliverable_requested,
    "deliverable.progress": _deliverable_progress,
    "deliverable.ready": _deliverable_ready,
    "deliverable.failed": _deliverable_failed,
    "billing.waiting": _billing_waiting,
    "billing.resumed": _billing_resumed,
    "run.completed": _run_completed,
}

__all__ = [
    "TERMINAL_STATUS",
    "Clarification",
    "DeliverableState",
    "RunState",
    "RunStatus",
    "StepState",
    "advance",
    "fold",
    "snapshot",
]
