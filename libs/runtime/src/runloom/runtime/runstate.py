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
from typing import Any, Literal

import msgspec
from runloom.contracts.events import (
    TERMINAL_TYPES,
    ArtifactRef,
    ClarificationRequested,
    Event,
    RateLimited,
    SourceFound,
    Usage,
)
from runloom.contracts.kinds import DEFAULT_SKILL, TERMINAL_STATUS, RunStatus

StepStatus = Literal["pending", "running", "done", "failed", "skipped"]
DeliverableStatus = Literal["requested", "running", "ready", "failed"]


class StepState(msgspec.Struct, kw_only=True):
    step_id: str
    title: str
    kind: str = "research"
    """research | write | deliver"""
    parallel_group: int | None = None
    status: StepStatus = "pending"
    error: str | None = None
    """Why the step failed or was skipped."""
    source_count: int = 0
    """Sources found by this step (as reported at completion, else as counted)."""


class DeliverableState(msgspec.Struct, kw_only=True):
    kind: str
    """report | website | slides"""
    job_id: str
    status: DeliverableStatus = "requested"
    attempt: int = 0
    max_attempts: int | None = None
    will_retry: bool = False
    """After a failed attempt: whether another one is coming."""
    artifacts: list[ArtifactRef] = []
    error: str | None = None


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
    out.pop("report_parts", None)
    out.pop("usage_ids", None)
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
        handler(st, ev.data)
    if ev.type in TERMINAL_TYPES:
        st.status = TERMINAL_STATUS[ev.type]
        st.terminal = ev
        st.clarification = None
        st.rate_limited = None
        st.billing_waiting = False


def _get(data: dict[str, Any], key: str, default: Any = None) -> Any:
    value = data.get(key, default)
    return default if value is None else value


def _running(st: RunState) -> None:
    if st.status in ("created", "waiting_clarification"):
        st.status = "running"


def _step(st: RunState, step_id: str, title: str | None = None) -> StepState:
    s = st.step(step_id)
    if s is None:
        s = StepState(step_id=step_id, title=title or step_id)
        st.steps.append(s)
    return s


def _run_created(st: RunState, d: dict[str, Any]) -> None:
    st.question = d.get("question")
    st.skill = _get(d, "skill", DEFAULT_SKILL)
    st.budget_usd = d.get("budget_usd")
    st.options = dict(_get(d, "options", {}))
    st.title = d.get("title") or st.title


def _run_started(st: RunState, d: dict[str, Any]) -> None:
    st.started_count += 1
    if st.clarification is None:
        _running(st)


def _plan(st: RunState, d: dict[str, Any]) -> None:
    old = {s.step_id: s for s in st.steps}
    steps = []
    for p in _get(d, "steps", []):
        prev = old.get(p["step_id"])
        s = StepState(
            step_id=p["step_id"],
            title=_get(p, "title", p["step_id"]),
            kind=_get(p, "kind", "research"),
            parallel_group=p.get("parallel_group"),
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


def _step_started(st: RunState, d: dict[str, Any]) -> None:
    s = _step(st, d["step_id"], d.get("title"))
    s.status = "running"
    s.error = None
    st.rate_limited = None
    if st.clarification is None:
        _running(st)


def _step_progress(st: RunState, d: dict[str, Any]) -> None:
    s = _step(st, d["step_id"])
    if s.status == "pending":
        s.status = "running"
    st.rate_limited = None


def _step_completed(st: RunState, d: dict[str, Any]) -> None:
    s = _step(st, d["step_id"])
    s.status = "done"
    s.error = None
    if d.get("source_count") is not None:
        s.source_count = d["source_count"]
    st.rate_limited = None


def _step_failed(st: RunState, d: dict[str, Any]) -> None:
    s = _step(st, d["step_id"])
    s.status = "skipped" if d.get("reason") == "skipped" else "failed"
    s.error = d.get("error")
    st.rate_limited = None


def _message_delta(st: RunState, d: dict[str, Any]) -> None:
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


def _source_found(st: RunState, d: dict[str, Any]) -> None:
    source = msgspec.convert(d, SourceFound)
    is_new = source.source_id not in st.sources
    st.sources[source.source_id] = source
    if is_new and source.step_id:
        s = st.step(source.step_id)
        if s is not None and s.status != "done":
            s.source_count += 1


def _usage_recorded(st: RunState, d: dict[str, Any]) -> None:
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


def _rate_limited(st: RunState, d: dict[str, Any]) -> None:
    st.rate_limited = msgspec.convert(d, RateLimited)


def _clarification_requested(st: RunState, d: dict[str, Any]) -> None:
    st.clarification = msgspec.convert(d, ClarificationRequested)
    st.status = "waiting_clarification"


def _clarification_answered(st: RunState, d: dict[str, Any]) -> None:
    st.clarification = None
    if st.status == "waiting_clarification":
        st.status = "running" if st.started_count else "created"


def _cancel_requested(st: RunState, d: dict[str, Any]) -> None:
    st.cancel_requested = True


def _content_stored(st: RunState, d: dict[str, Any]) -> None:
    st.content_hash = d.get("content_hash")


def _deliverable(st: RunState, d: dict[str, Any]) -> DeliverableState:
    kind = d["kind"]
    dv = st.deliverables.get(kind)
    if dv is None or dv.job_id != d["job_id"]:
        dv = DeliverableState(kind=kind, job_id=d["job_id"])
        st.deliverables[kind] = dv
    return dv


def _deliverable_requested(st: RunState, d: dict[str, Any]) -> None:
    _deliverable(st, d)


def _deliverable_progress(st: RunState, d: dict[str, Any]) -> None:
    dv = _deliverable(st, d)
    if dv.status != "ready":
        dv.status = "running"
        dv.attempt = max(dv.attempt, int(_get(d, "attempt", 1)))
        dv.will_retry = False
        dv.error = None


def _deliverable_ready(st: RunState, d: dict[str, Any]) -> None:
    dv = _deliverable(st, d)
    dv.status = "ready"
    dv.attempt = max(dv.attempt, int(_get(d, "attempt", 1)))
    dv.artifacts = [msgspec.convert(a, ArtifactRef) for a in _get(d, "artifacts", [])]
    dv.will_retry = False
    dv.error = None


def _deliverable_failed(st: RunState, d: dict[str, Any]) -> None:
    dv = _deliverable(st, d)
    if dv.status == "ready":
        return
    dv.status = "failed"
    dv.attempt = max(dv.attempt, int(d["attempt"]))
    dv.max_attempts = d.get("max_attempts")
    dv.will_retry = bool(d.get("will_retry"))
    dv.error = d.get("error")


def _billing_waiting(st: RunState, d: dict[str, Any]) -> None:
    st.billing_waiting = True


def _billing_resumed(st: RunState, d: dict[str, Any]) -> None:
    st.billing_waiting = False


def _run_completed(st: RunState, d: dict[str, Any]) -> None:
    st.partial = bool(d.get("partial"))
    st.missing = list(_get(d, "missing", []))


_HANDLERS = {
    "run.created": _run_created,
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
    "DeliverableState",
    "RunState",
    "RunStatus",
    "StepState",
    "advance",
    "fold",
    "snapshot",
]
