"""The fold: a run's state from its events, whole or in chunks."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from runloom.contracts.events import (
    ArtifactRef,
    CancelRequested,
    ClarificationAnswered,
    ClarificationRequested,
    DeliverableFailed,
    DeliverableReady,
    DeliverableRequested,
    Event,
    MessageDelta,
    PlanProposed,
    PlanStep,
    RateLimited,
    RunCancelled,
    RunCompleted,
    RunCreated,
    RunQueued,
    RunStarted,
    SourceFound,
    StepCompleted,
    StepFailed,
    StepStarted,
    UnknownEventType,
    Usage,
    UsageRecorded,
    data_of,
    decode_event,
    encode_event,
    event_from,
    payload_of,
    type_of,
)
from runloom.runtime.runstate import RunState, advance, fold, snapshot


def events(*payloads: Any) -> list[Event]:
    return [
        Event(
            id=f"e{i}",
            run_id="run_1",
            tenant_id="t1",
            seq=i,
            type=type_of(p),
            time=datetime(2026, 1, 1, tzinfo=UTC),
            producer="test",
            data=data_of(p),
        )
        for i, p in enumerate(payloads, start=1)
    ]


ART = ArtifactRef(
    artifact_id="a1", format="md", media_type="text/markdown", file_name="r.md", size=3, sha256="x"
)

STORY = events(
    RunCreated(question="What is NATS?", title="NATS", budget_usd=1.0, options={"x": 1}),
    CancelRequested(reason="oops"),
    RunStarted(worker="w1"),
    PlanProposed(
        steps=[PlanStep(step_id="s1", title="Search"), PlanStep(step_id="s2", title="Write")]
    ),
    StepStarted(step_id="s1"),
    RateLimited(provider="openai", retry_at="2026-01-01T00:00:05Z", retry_after_s=5),
    SourceFound(source_id="src1", title="Doc", passage="p", step_id="s1"),
    SourceFound(source_id="src2", title="Doc2", passage="p", step_id="s1"),
    SourceFound(source_id="src2", title="Doc2", passage="p", step_id="s1"),
    StepCompleted(step_id="s1"),
    UsageRecorded(usage_id="u1", kind="provider", cost_usd=0.25, usage=Usage(input_tokens=10)),
    UsageRecorded(usage_id="u1", kind="provider", cost_usd=0.25, usage=Usage(input_tokens=10)),
    UsageRecorded(usage_id="u2", kind="tool", cost_usd=0.5, usage=Usage(tool_calls=1)),
    ClarificationRequested(question="Which NATS?"),
    ClarificationAnswered(answer="the bus"),
    MessageDelta(stream="report", text="b", index=1),
    MessageDelta(stream="report", text="a", index=0),
    MessageDelta(stream="report", text="a", index=0),
    MessageDelta(stream="report", text="c", index=2),
    MessageDelta(stream="notes", text="zzz", index=3),
    StepFailed(step_id="s2", error="no results", reason="no_results"),
    DeliverableRequested(kind="report", job_id="j1", content_hash="h"),
    DeliverableFailed(
        kind="report", job_id="j1", error="boom", attempt=1, max_attempts=3, will_retry=True
    ),
    DeliverableReady(kind="report", job_id="j1", artifacts=[ART], attempt=2),
    RunCompleted(partial=True, missing=["s2: no results"]),
    StepStarted(step_id="after-the-end"),
)


def test_story_folds_to_what_a_user_sees() -> None:
    s = fold(STORY)
    assert (s.run_id, s.tenant_id, s.status) == ("run_1", "t1", "completed")
    assert (s.question, s.title, s.budget_usd, s.options) == (
        "What is NATS?",
        "NATS",
        1.0,
        {"x": 1},
    )
    assert [(x.step_id, x.status, x.source_count) for x in s.steps] == [
        ("s1", "done", 2),
        ("s2", "failed", 0),
    ]
    assert s.steps[1].error == "no results"
    assert sorted(s.sources) == ["src1", "src2"]
    assert s.report_text == "abc"
    assert s.spent_usd == 0.75
    assert s.usage.input_tokens == 10 and s.usage.tool_calls == 1
    assert s.clarification is None and s.rate_limited is None
    assert s.cancel_requested and s.partial and s.missing == ["s2: no results"]
    d = s.deliverables["report"]
    assert (d.status, d.attempt, d.max_attempts, d.will_retry) == ("ready", 2, 3, False)
    assert d.artifacts == [ART]
    assert s.terminal is not None and s.terminal.type == "run.completed"
    assert s.last_seq == len(STORY) - 1 and s.event_count == len(STORY) - 1
    assert s.started_count == 1
    assert snapshot(s)["status"] == "completed"


def test_intermediate_states() -> None:
    assert fold(STORY[:1]).status == "created"
    assert fold(STORY[:6]).rate_limited is not None
    assert fold(STORY[:9]).rate_limited is not None  # a source is not progress of the step
    assert fold(STORY[:10]).rate_limited is None
    waiting = fold(STORY[:14])
    assert waiting.status == "waiting_clarification"
    assert waiting.clarification is not None and waiting.clarification.question == "Which NATS?"
    assert fold(STORY[:15]).status == "running"
    failed = fold(STORY[:23]).deliverables["report"]
    assert (failed.status, failed.will_retry, failed.error) == ("failed", True, "boom")


def test_fold_does_not_touch_its_input() -> None:
    s = fold(STORY[:5])
    before = snapshot(s)
    fold(STORY[5:], s)
    assert snapshot(s) == before


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(STORY)), max_size=6), st.booleans())
def test_chunks_and_overlaps_give_the_same_state(cuts: list[int], overlap: bool) -> None:
    whole = snapshot(fold(STORY))
    state: RunState | None = None
    prev = 0
    for cut in [*sorted(cuts), len(STORY)]:
        start = max(0, prev - 2) if overlap else prev
        state = fold(STORY[start:cut], state)
        prev = max(prev, cut)
    assert state is not None
    assert snapshot(state) == whole


def test_advance_in_place_reaches_what_fold_reaches() -> None:
    state = RunState()
    for ev in STORY:
        assert advance(state, [ev]) is state
    assert state == fold(STORY)


def test_an_event_type_added_later_is_decoded_and_skipped() -> None:
    """A reader built before a type existed still follows the run: it decodes the envelope
    (stored bytes or a JSON page), skips what it does not know, and applies what follows."""
    created, started, completed = events(
        RunCreated(question="What is NATS?"), RunStarted(worker="w1"), RunCompleted()
    )
    later = msgspec.json.decode(encode_event(started))
    later.update(type="step.retried", data={"step_id": "s1", "attempt": 2})
    later["run_id"] = created.run_id = completed.run_id = "run_01JD6Q0W7XKZ3T9M4N5P6R8AGX"
    stored = msgspec.json.encode(later)
    from_bytes, from_page = decode_event(stored), event_from(later)
    assert from_bytes == from_page and from_bytes.type == "step.retried"
    assert encode_event(from_bytes) == stored  # archived and forwarded as it came
    with pytest.raises(UnknownEventType):
        payload_of(from_bytes)
    completed.seq = 3
    st_ = fold([created, from_bytes, completed])
    assert (st_.status, st_.last_seq, st_.event_count) == ("completed", 3, 3)
    assert not st_.steps


def test_a_queued_run_keeps_its_place_until_it_starts_or_ends() -> None:
    waiting = events(
        RunCreated(question="q"),
        RunQueued(position=9, reason="tenant_concurrency", running=3, limit=3),
        RunQueued(position=4, reason="platform_busy", running=2, limit=3),
    )
    st = fold(waiting)
    assert st.status == "queued" and st.queued is not None
    assert (st.queued.position, st.queued.reason) == (4, "platform_busy")
    started = fold(events(*[payload_of(e) for e in waiting], RunStarted(worker="w")))
    assert started.status == "running" and started.queued is None
    cancelled = fold(events(*[payload_of(e) for e in waiting], RunCancelled(reason="asked")))
    assert cancelled.status == "cancelled" and cancelled.queued is None
