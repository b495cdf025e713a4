"""The AG-UI mapping, tested like `runstate.fold`: stored histories in, AG-UI events out.

Every stream is checked by the `ag-ui-protocol` models (each event parses as its type) and by
`ag-ui-validate` (no error, no warning); what a client folds from it equals `runstate.fold`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from ag_ui.core import Event as AguiEventModel
from ag_ui_validate import ValidatorOptions, create_validator
from pydantic import TypeAdapter
from runloom.contracts.events import (
    ArtifactRef,
    BudgetWarning,
    ClarificationAnswered,
    ClarificationRequested,
    DeliverableReady,
    DeliverableRequested,
    Event,
    MessageDelta,
    PlanProposed,
    PlanStep,
    RateLimited,
    RunBudgetStopped,
    RunCancelled,
    RunCompleted,
    RunCreated,
    RunFailed,
    RunQueued,
    RunStarted,
    SourceFound,
    StepCompleted,
    StepFailed,
    StepProgress,
    StepStarted,
    ToolCalled,
    ToolResult,
    Usage,
    UsageRecorded,
    data_of,
    type_of,
)
from runloom.gateway import _cursor
from runloom.gateway._history import Frame
from runloom.gateway.agui import Position, Renderer, View, project, state_of
from runloom.gateway.agui._stream import WHOLE
from runloom.runtime.runstate import fold

EVENT = TypeAdapter(AguiEventModel)
RUN = "run_01JD6Q0W7XKZ3T9M4N5P6R8AGX"


def events(*payloads: Any) -> list[Event]:
    return [
        Event(
            id=f"evt{i:04d}",
            run_id=RUN,
            tenant_id="t1",
            seq=i,
            type=type_of(p),
            time=datetime(2026, 1, 1, 0, 0, i % 60, tzinfo=UTC),
            producer="test",
            data=data_of(p),
        )
        for i, p in enumerate(payloads, start=1)
    ]


ART = ArtifactRef(
    artifact_id="art1",
    format="md",
    media_type="text/markdown",
    file_name="r.md",
    size=3,
    sha256="x",
)
PLAN = PlanProposed(
    steps=[
        PlanStep(step_id="research-1", title="Decorators", parallel_group=1),
        PlanStep(step_id="research-2", title="Context managers", parallel_group=1),
        PlanStep(step_id="write", title="Write the report", kind="write"),
    ]
)
OPENING = [
    RunCreated(
        question="Can you help me?",
        title="Help",
        options={"agui": {"thread_id": "th-1", "message_id": "m-user"}},
    ),
    RunStarted(worker="w1"),
    ClarificationRequested(
        question="With what?", timeout_s=60, deadline="2026-01-01T00:10:00.000Z"
    ),
    ClarificationAnswered(answer="decorators and context managers"),
    PLAN,
    StepStarted(step_id="research-1"),
    StepStarted(step_id="research-2"),
    ToolCalled(call_id="c1", tool="corpus_search", arguments={"q": "decorators"}),
    RateLimited(provider="openai", retry_at="2026-01-01T00:00:09Z", retry_after_s=2),
    ToolResult(call_id="c1", tool="corpus_search", summary="2 passages", result_count=2),
    SourceFound(
        source_id="src1", title="Decorators", passage="A decorator...", step_id="research-1"
    ),
    StepProgress(step_id="research-2", message="searching"),
    StepFailed(step_id="research-2", error="no results", reason="no_results"),
    SourceFound(source_id="src/2~", title="Odd id", passage="p", step_id="research-1"),
    StepCompleted(step_id="research-1", source_count=2),
    UsageRecorded(
        usage_id="u1",
        kind="provider",
        provider="offline",
        model="extractive",
        usage=Usage(input_tokens=100, output_tokens=20),
        cost_usd=0.01,
    ),
    UsageRecorded(usage_id="u1", kind="provider", provider="offline", model="extractive"),
    BudgetWarning(scope="run", spent_usd=0.8, budget_usd=1.0, fraction=0.8),
    StepStarted(step_id="write"),
    MessageDelta(stream="report", text="# Report\n", index=0),
    MessageDelta(stream="report", text="C", index=2),
    MessageDelta(stream="report", text="B ", index=1),
    MessageDelta(stream="report", text="", index=3),
    MessageDelta(stream="report", text="D.", index=4),
    MessageDelta(stream="report", text="B ", index=1),
    StepCompleted(step_id="write"),
    DeliverableRequested(kind="report", job_id="j1", content_hash="h"),
    DeliverableReady(kind="report", job_id="j1", artifacts=[ART]),
]
COMPLETED = events(*OPENING, RunCompleted(partial=True, missing=["research-2: no results"]))


def check(stream: list[dict[str, Any]]) -> None:
    """Each event parses as its ag-ui-protocol model; ag-ui-validate finds nothing to say."""
    for ev in stream:
        parsed = EVENT.validate_python(ev)
        assert parsed.type.value == ev["type"]
        assert not (parsed.model_extra or {}), (ev["type"], parsed.model_extra)
    validator = create_validator(ValidatorOptions())
    found = [d for ev in stream for d in validator.feed(json.loads(json.dumps(ev)))]
    found += validator.finalize()
    bad = [f"{d.rule} {d.message} @{d.event_index}" for d in found if d.severity != "info"]
    assert not bad, bad
    assert not validator.report().internal_errors


def client_view(stream: list[dict[str, Any]], view: View | None = None) -> View:
    view = view or View(thread_id="", run_id="")
    for ev in stream:
        view.apply(ev)
    return view


def test_a_whole_run_maps_to_valid_ag_ui_runs_whose_fold_is_runstate_fold() -> None:
    stream = project(COMPLETED)
    check(stream)
    types = [e["type"] for e in stream]
    assert types.count("RUN_STARTED") == 2  # the part before the interrupt, then the rest
    first = stream[0]
    assert first["protocolVersion"] == "1.0" and first["threadId"] == "th-1"
    assert first["runId"] == RUN
    assert first["input"]["messages"] == [
        {"id": "m-user", "role": "user", "content": "Can you help me?"}
    ]
    interrupt = next(e for e in stream if e.get("outcome", {}).get("type") == "interrupt")
    i = stream.index(interrupt)
    assert types[i - 2 : i] == ["STATE_SNAPSHOT", "MESSAGES_SNAPSHOT"]
    (asked,) = interrupt["outcome"]["interrupts"]
    assert asked["id"] == COMPLETED[2].id and asked["message"] == "With what?"
    assert asked["expiresAt"] == "2026-01-01T00:10:00.000Z"
    finished = stream[-1]
    assert finished["type"] == "RUN_FINISHED" and finished["outcome"] == {"type": "success"}
    assert finished["result"]["partial"] is True
    assert finished["result"]["missing"] == ["research-2: no results"]
    assert finished["result"]["deliverables"] == {"report": ["/v1/artifacts/art1"]}
    assert finished["usage"] == [
        {
            "provider": "offline",
            "model": "extractive",
            "inputTokens": 100,
            "outputTokens": 20,
            "totalTokens": 120,
        }
    ]
    # Parallel research steps are sub-agents; the failed one says why.
    assert [e["subagentRunId"] for e in stream if e["type"] == "SUBAGENT_STARTED"] == [
        f"{RUN}:research-1",
        f"{RUN}:research-2",
    ]
    error = next(e for e in stream if e["type"] == "SUBAGENT_ERROR")
    assert (error["code"], error["message"]) == ("no_results", "no results")
    assert [e["type"] for e in stream if e["type"].startswith("TOOL_CALL")] == [
        "TOOL_CALL_START",
        "TOOL_CALL_ARGS",
        "TOOL_CALL_END",
        "TOOL_CALL_RESULT",
    ]
    assert any(e["type"] == "CUSTOM" and e["name"] == "runloom:budget_warning" for e in stream)
    # What a client folds equals runstate.fold.
    rs = fold(COMPLETED)
    view = client_view(stream)
    assert view.state == state_of(rs)
    assert view.messages[f"{RUN}:report"]["content"] == rs.report_text == "# Report\nB CD."
    assert view.state["deliverables"]["report"]["artifacts"][0]["url"] == "/v1/artifacts/art1"
    assert view.state["sources"]["src/2~"]["title"] == "Odd id"
    assert all(isinstance(e.get("timestamp"), int) for e in stream)


@pytest.mark.parametrize(
    ("end", "expected"),
    [
        (RunCancelled(reason="user"), ("RUN_FINISHED", {"type": "cancelled"}, None)),
        (RunFailed(error="boom", reason="internal"), ("RUN_ERROR", None, "internal")),
        (
            RunBudgetStopped(scope="run", spent_usd=1.0, budget_usd=1.0, kept=["report"]),
            ("RUN_ERROR", None, "budget_stopped"),
        ),
    ],
)
def test_every_ending_says_how_the_run_ended(end: Any, expected: tuple[Any, ...]) -> None:
    # Ended in the middle of the report: the open message, step and run close properly.
    history = events(*OPENING[:21], end)
    stream = project(history)
    check(stream)
    last = stream[-1]
    assert (last["type"], last.get("outcome"), last.get("code")) == expected
    assert client_view(stream).state == state_of(fold(history))


def test_an_end_while_paused_opens_a_run_part_to_say_so() -> None:
    history = events(*OPENING[:3], RunFailed(error="no answer", reason="clarification_timeout"))
    stream = project(history)
    check(stream)
    assert [e["type"] for e in stream][-3:] == ["RUN_STARTED", "STATE_SNAPSHOT", "RUN_ERROR"]
    assert stream[-1]["code"] == "clarification_timeout"


def _frames(history: list[Event]) -> list[Frame]:
    out = []
    for ev in history:
        raw = json.dumps(data_of(ev)).encode()
        cursor = _cursor.encode("e1", RUN, ev.seq, ev.seq + 100)
        out.append(Frame(ev.seq, ev.seq + 100, ev.type, raw, cursor))
    return out


def _render(renderer: Renderer, frames: list[Frame]) -> list[tuple[str | None, dict[str, Any]]]:
    out = []
    for frame in frames:
        out.extend(renderer.events(frame))
        if renderer.until(frame):
            break
    return out


def test_resuming_after_any_frame_misses_nothing_and_repeats_nothing() -> None:
    frames = _frames(COMPLETED)
    whole = _render(Renderer(RUN), frames)
    ids = [i for i, _ in whole]
    assert all(ids) and len(set(ids)) == len(ids)
    assert [e for _, e in whole] == project(COMPLETED)
    for cut in range(len(whole)):
        cursor, index = whole[cut][0].rsplit(".", 1)  # type: ignore[union-attr]
        seq = _cursor.decode(cursor).seq
        resumed = _render(Renderer(RUN, Position(seq, int(index))), frames)
        prelude = [e for i, e in resumed if i is None]
        rest = [(i, e) for i, e in resumed if i is not None]
        assert rest == whole[cut + 1 :], cut
        if not rest:
            continue
        # The continuation alone is a stream a strict client accepts ...
        tail = [e for _, e in resumed]
        if tail[0]["type"] != "RUN_STARTED":
            raise AssertionError((cut, tail[0]))
        check(tail)
        # ... and the client that had the frames up to the cut ends where a whole stream ends.
        had = client_view([e for _, e in whole[: cut + 1]])
        end = client_view(tail, had)
        full = client_view([e for _, e in whole])
        assert (end.state, end.messages) == (full.state, full.messages), cut
        assert prelude == [] or prelude[0]["type"] == "RUN_STARTED"


def test_a_post_stream_is_one_run_part_and_a_resume_starts_after_the_answer() -> None:
    frames = _frames(COMPLETED)
    first = _render(Renderer(RUN, one_part=True), frames)
    assert first[-1][1]["outcome"]["type"] == "interrupt"
    check([e for _, e in first])
    answered = next(e for e in COMPLETED if e.type == "clarification.answered")
    second = _render(Renderer(RUN, Position(answered.seq - 1, WHOLE), one_part=True), frames)
    check([e for _, e in second])
    assert second[0][1]["type"] == "RUN_STARTED"
    assert first + second == _render(Renderer(RUN), frames)


def test_snapshots_carry_the_threads_earlier_messages_first() -> None:
    earlier = [
        {"id": "m-0", "role": "user", "content": "What is NATS?"},
        {"id": "r-0", "role": "assistant", "content": "A messaging system."},
    ]
    stream = project(COMPLETED, history=earlier)
    check(stream)
    (snapshot,) = [e for e in stream if e["type"] == "MESSAGES_SNAPSHOT"]
    assert [m["id"] for m in snapshot["messages"]][:3] == ["m-0", "r-0", "m-user"]
    view = Renderer(RUN, history=earlier)
    for frame in _frames(COMPLETED):
        view.events(frame)
    assert [m["id"] for m in view.projection.view.transcript()][:2] == ["m-0", "r-0"]


def test_a_history_hole_ends_the_stream_with_a_run_error_not_a_guess() -> None:
    frames = _frames(COMPLETED[:22])
    reset = Frame(
        22,
        0,
        "reset",
        json.dumps({"type": "reset", "reason": "events 5..21 are gone"}).encode(),
        "c",
    )
    renderer = Renderer(RUN)
    sent = [e for f in frames[:21] for _, e in renderer.events(f)]
    tail = [e for _, e in renderer.events(reset)]
    assert renderer.until(reset)
    assert tail[-1] == {
        "type": "RUN_ERROR",
        "code": "history_unavailable",
        "message": "events 5..21 are gone",
    }
    check(sent + tail)


def test_a_queued_run_shows_its_place_in_the_state_until_it_starts() -> None:
    history = events(
        RunCreated(question="Can you help me?"),
        RunQueued(position=5, reason="tenant_concurrency", running=2, limit=2),
        RunQueued(position=2, reason="platform_busy", running=1, limit=2),
        RunStarted(worker="w1"),
    )
    view = client_view(project(history[:3]))
    assert view.state == state_of(fold(history[:3]))
    assert view.state["status"] == "queued"
    assert view.state["queued"] == {
        "position": 2,
        "reason": "platform_busy",
        "running": 1,
        "limit": 2,
    }
    started = client_view(project(history))
    assert started.state["status"] == "running" and started.state["queued"] is None
