"""A replica taking a run over continues it exactly: the same report as an uninterrupted run."""

from __future__ import annotations

import pytest
from runloom.runtime.runstate import fold

QUESTION = "How are exceptions raised and handled with try and except?"


@pytest.mark.orch_options(delta_interval_s=0.2)
async def test_takeover_mid_report_yields_the_uninterrupted_report(
    start_orchestrator, driver
) -> None:
    async with start_orchestrator():
        reference = await driver.run(QUESTION, deliverables=[])
        ref_events = await driver.finished(reference)
        run_id = await driver.run(QUESTION, deliverables=[])
        await driver.wait_for(run_id, {"message.delta"})
    # The first replica stopped mid-report; a second one takes the run over.
    interrupted = await driver.events(run_id)
    assert not any(e.type == "run.completed" for e in interrupted)
    async with start_orchestrator():
        events = await driver.finished(run_id)
    ref, got = fold(ref_events), fold(events)
    assert got.status == "completed" and got.started_count == 2
    assert got.report_text == ref.report_text.replace(reference, run_id)
    assert len(got.report_parts) > 1
    # Nothing done before the takeover was done again.
    ids = [e.id for e in events]
    assert len(ids) == len(set(ids))
    before = {e.data.get("step_id") for e in interrupted if e.type == "step.completed"}
    after = [
        e.data.get("step_id") for e in events[len(interrupted) :] if e.type == "step.completed"
    ]
    assert before and not before & set(after)
    provider_calls = [
        e for e in events if e.type == "usage.recorded" and e.data["kind"] == "provider"
    ]
    assert len(provider_calls) == len(
        [s for s in got.steps if s.kind == "write" and s.status == "done"]
    )


@pytest.mark.orch_options(search_delay_s=1.0)
async def test_takeover_during_research_completes_once(start_orchestrator, driver) -> None:
    async with start_orchestrator():
        run_id = await driver.run(QUESTION, deliverables=[])
        await driver.wait_for(run_id, {"tool.called"})
    interrupted = await driver.events(run_id)
    assert "tool.result" not in [e.type for e in interrupted]
    async with start_orchestrator():
        events = await driver.finished(run_id)
    got = fold(events)
    assert got.status == "completed" and got.started_count == 2
    ids = [e.id for e in events]
    assert len(ids) == len(set(ids))
    called = [e.data["call_id"] for e in events if e.type == "tool.called"]
    results = [e.data["call_id"] for e in events if e.type == "tool.result"]
    assert sorted(called) == sorted(results) and len(set(called)) == len(called)
    usage = [e.data["usage_id"] for e in events if e.type == "usage.recorded"]
    assert len(usage) == len(set(usage))
