"""Runs written by the openai provider (a local server speaking its wire protocol)."""

from __future__ import annotations

from runloom.devkit.runs import FakeOpenAI
from runloom.runtime.runstate import fold

QUESTION = "How do generators and the yield expression work?"


async def test_rate_limit_is_shown_then_the_run_completes(start_orchestrator, driver) -> None:
    async with FakeOpenAI(script=["429"], retry_after=0.5) as server:
        async with start_orchestrator(
            provider="openai", openai_base_url=server.base_url, openai_model="gpt-test"
        ):
            run_id = await driver.run(QUESTION, deliverables=[])
            events = await driver.finished(run_id)
    types = [e.type for e in events]
    assert types[-1] == "run.completed", types
    limited = [e for e in events if e.type == "rate_limited"]
    assert len(limited) == 1 and limited[0].data["retry_after_s"] == 0.5
    assert limited[0].data["provider"] == "openai" and limited[0].data["step_id"]
    after = types[types.index("rate_limited") + 1 :]
    assert "step.completed" in after  # the run went on after the wait
    usage = [e for e in events if e.type == "usage.recorded" and e.data["kind"] == "provider"]
    assert usage and all(u.data["usage"]["input_tokens"] == 321 for u in usage)
    assert fold(events).report_text.count("[1]") >= 1


async def test_a_cut_stream_fails_its_step_clearly(start_orchestrator, driver) -> None:
    async with FakeOpenAI(script=["cut"]) as server:
        async with start_orchestrator(
            provider="openai", openai_base_url=server.base_url, openai_model="gpt-test"
        ):
            run_id = await driver.run(QUESTION, deliverables=[])
            events = await driver.finished(run_id)
    failed = [e for e in events if e.type == "step.failed" and e.data["reason"] == "provider_error"]
    assert len(failed) == 1
    assert "cut midway" in failed[0].data["error"]
    done = events[-1]
    assert done.type == "run.completed" and done.data["partial"] is True
    assert any("cut midway" in m for m in done.data["missing"])
