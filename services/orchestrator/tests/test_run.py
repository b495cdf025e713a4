"""Runs end to end through an in-process replica on the real NATS and Postgres."""

from __future__ import annotations

import asyncio
import time

import msgspec
import pytest
from runloom.contracts.content import ContentModel, content_hash
from runloom.contracts.events import TERMINAL_TYPES, ContentStored
from runloom.runtime.runstate import fold

QUESTION = "How do Python decorators and context managers work?"


def content_of(events) -> ContentModel:
    stored = [e for e in events if e.type == "content.stored"]
    assert len(stored) == 1
    return msgspec.convert(stored[0].data, ContentStored).content


async def test_question_over_default_corpus_completes_with_verified_citations(
    orchestrator, driver
) -> None:
    run_id = await driver.run(QUESTION, deliverables=[])
    events = await driver.finished(run_id)
    types = [e.type for e in events]
    assert types[-1] == "run.completed", types
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert sum(t in TERMINAL_TYPES for t in types) == 1
    plan = next(e for e in events if e.type == "plan.proposed")
    research = [s for s in plan.data["steps"] if s.get("kind", "research") == "research"]
    assert len(research) >= 2 and {s["parallel_group"] for s in research} == {1}
    assert types.count("tool.called") == types.count("tool.result") >= len(research)
    searched = {e.data["step_id"] for e in events if e.type == "tool.called"}
    assert searched == {s["step_id"] for s in research}
    sources = {e.data["source_id"]: e.data for e in events if e.type == "source.found"}
    assert len(sources) == types.count("source.found") > 0  # never twice
    deltas = [e for e in events if e.type == "message.delta"]
    assert len(deltas) >= 3 and [d.data["index"] for d in deltas] == list(range(len(deltas)))
    content = content_of(events)
    claims = [c for s in content.sections for c in s.claims]
    assert claims and all(c.citations for c in claims)
    for claim in claims:
        for cite in claim.citations:
            assert cite.passage in sources[cite.source_id]["passage"]
    state = fold(events)
    assert state.content_hash == content_hash(content)
    assert "## Sources" in state.report_text and "[1]" in state.report_text
    assert all(e.causation_id for e in events if e.producer.startswith("orchestrator"))
    # An ended run's checkpoints are cleaned up.
    deadline = time.monotonic() + 5
    query = "SELECT count(*) FROM run_checkpoints WHERE run_id=$1"
    while await driver.pool.fetchval(query, run_id):
        assert time.monotonic() < deadline, "checkpoints of an ended run are kept"
        await asyncio.sleep(0.05)


async def test_vague_question_pauses_then_continues_after_the_answer(orchestrator, driver) -> None:
    run_id = await driver.run("Can you help me with something?", deliverables=[])
    events = await driver.wait_for(run_id, {"clarification.requested"})
    ask = events[-1]
    assert ask.data["timeout_s"] > 0 and ask.data["deadline"]
    await driver.answer(run_id, "generators and the yield expression")
    events = await driver.finished(run_id)
    assert events[-1].type == "run.completed"
    types = [e.type for e in events]
    assert types.index("clarification.answered") < types.index("plan.proposed")


@pytest.mark.orch_options(clarification_timeout_s=0.5)
async def test_unanswered_clarification_times_out_clearly(orchestrator, driver) -> None:
    run_id = await driver.run("help please", deliverables=[])
    events = await driver.finished(run_id, timeout=15)
    assert events[-1].type == "run.failed"
    assert events[-1].data["reason"] == "clarification_timeout"
    assert "answered" in events[-1].data["error"]
    asked = [e for e in events if e.type == "clarification.requested"]
    assert events[-1].causation_id == asked[-1].id  # it ends because of that question


async def test_same_start_delivered_twice_is_one_run(orchestrator, driver) -> None:
    run_id = await driver.create(QUESTION, deliverables=[])
    await driver.start(run_id, msg_id="a")
    await driver.start(run_id, msg_id="b")  # a second delivery, not a dedup-window duplicate
    events = await driver.finished(run_id)
    types = [e.type for e in events]
    assert types.count("run.started") == 1 and types.count("plan.proposed") == 1
    assert len({e.id for e in events}) == len(events)
    assert sum(t in TERMINAL_TYPES for t in types) == 1


async def test_cancel_before_start(orchestrator, driver) -> None:
    run_id = await driver.create(QUESTION, deliverables=[])
    await driver.cancel(run_id)
    await driver.start(run_id)
    events = await driver.finished(run_id)
    assert [e.type for e in events] == ["run.created", "cancel.requested", "run.cancelled"]


async def test_sub_question_with_no_results_completes_partial(orchestrator, driver) -> None:
    run_id = await driver.run(
        "Explain generators, exceptions and zyxqwv frobnication", deliverables=[]
    )
    events = await driver.finished(run_id)
    done = events[-1]
    assert done.type == "run.completed" and done.data["partial"] is True
    assert any("zyxqwv" in m for m in done.data["missing"])
    assert any(e.type == "step.failed" and e.data["reason"] == "no_results" for e in events)


async def test_budget_stop_keeps_what_was_written(orchestrator, driver) -> None:
    run_id = await driver.run(QUESTION, budget_usd=0.006, deliverables=[])
    events = await driver.finished(run_id)
    stop = events[-1]
    assert stop.type == "run.budget_stopped", [e.type for e in events]
    assert stop.data["scope"] == "run" and stop.data["budget_usd"] == 0.006
    assert stop.data["spent_usd"] <= 0.006
    content = content_of(events)
    assert content.sections and stop.data["kept"][0].startswith("content model")
    spent = fold(events).spent_usd
    assert 0 < spent <= 0.006
    # No provider call started after the refusal: every reservation was committed or released.
    assert (
        len([e for e in events if e.type == "step.started"])
        == len([e for e in events if e.type in ("step.completed", "step.failed")]) + 1
    )


async def test_cancel_works_while_billing_does_not_answer(
    orchestrator_without_billing, driver
) -> None:
    run_id = await driver.run(QUESTION, deliverables=[])
    await driver.wait_for(run_id, {"billing.waiting"}, timeout=15)
    asked = await driver.cancel(run_id)
    events = await driver.finished(run_id, timeout=5)
    assert events[-1].type == "run.cancelled"
    assert events[-1].causation_id == asked.id


async def test_cancel_while_paused_for_clarification(orchestrator, driver) -> None:
    from runloom.contracts.events import CancelRequested

    run_id = await driver.run("Any help?", deliverables=[])
    await driver.wait_for(run_id, {"clarification.requested"})
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    asked = await driver.log.append(
        run_id, driver.tenant_id, CancelRequested(), trace=f"00-{trace_id}-00f067aa0ba902b7-01"
    )
    events = await driver.finished(run_id, timeout=2.0)
    assert events[-1].type == "run.cancelled" and events[-1].causation_id == asked.id
    assert events[-1].trace and events[-1].trace.split("-")[1] == trace_id
    deadline = time.monotonic() + 5
    query = "SELECT count(*) FROM paused_runs WHERE run_id=$1"
    while await driver.pool.fetchval(query, run_id):
        assert time.monotonic() < deadline, "the paused run is still watched after it ended"
        await asyncio.sleep(0.05)


@pytest.mark.orch_options(search_delay_s=10.0)
async def test_cancel_during_searches_is_answered_within_two_seconds(orchestrator, driver) -> None:
    for _ in range(5):
        run_id = await driver.run(QUESTION, deliverables=[])
        await driver.wait_for(run_id, {"tool.called"})
        asked = await driver.cancel(run_id)
        started = time.monotonic()
        events = await driver.finished(run_id, timeout=2.0)
        assert time.monotonic() - started < 2.0
        assert events[-1].type == "run.cancelled" and events[-1].causation_id == asked.id
        assert "tool.result" not in [e.type for e in events]


async def test_a_malformed_start_command_is_dead_lettered_with_the_reason(
    orchestrator, driver, js
) -> None:
    from runloom.contracts import subjects
    from runloom.contracts.commands import DeadLetter

    sub = await js.subscribe(
        subjects.dead_letter(subjects.COMMANDS_STREAM, "orchestrator"), deliver_policy="new"
    )
    try:
        await js.publish(subjects.START_RUN, b'{"run_id": 42}')
        msg = await sub.next_msg(timeout=10)
    finally:
        await sub.unsubscribe()
    letter = msgspec.json.decode(msg.data, type=DeadLetter)
    assert letter.subject == subjects.START_RUN and letter.payload == '{"run_id": 42}'
    assert "run_id" in letter.reason or "command_id" in letter.reason


async def test_an_answer_whose_resume_command_was_lost_still_resumes(orchestrator, driver) -> None:
    from runloom.contracts.events import ClarificationAnswered

    run_id = await driver.run("Any help?", deliverables=[])
    await driver.wait_for(run_id, {"clarification.requested"})
    # The gateway stored the answer and died before sending ResumeRun.
    await driver.log.append(run_id, driver.tenant_id, ClarificationAnswered(answer="generators"))
    events = await driver.finished(run_id, timeout=20)
    assert events[-1].type == "run.completed"
