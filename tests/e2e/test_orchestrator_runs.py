"""Runs through the gateway with real processes: a cited report, clarification, one run."""

from __future__ import annotations

import httpx
from runloom.contracts import subjects
from runloom.contracts.commands import StartRun
from runloom.devkit.runs import json_events, sse_events, wait_for_event
from runloom.runtime import bus

QUESTION = "How do Python decorators and context managers work?"


async def test_question_over_default_corpus_ends_in_a_cited_report(platform, corpus) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        resp = await client.post(
            f"{platform.url}/v1/runs",
            json={"question": QUESTION, "options": {"deliverables": ["report"]}},
            headers=platform.headers(),
        )
        assert resp.status_code == 201, resp.text
        run_id = resp.json()["id"]
        events, _ = await sse_events(client, platform.url, run_id, platform.headers())
    types = [e["type"] for e in events]
    assert types[-1] == "run.completed", types
    assert sum(t.startswith("run.") and t not in ("run.created", "run.started") for t in types) == 1
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    plan = next(e for e in events if e["type"] == "plan.proposed")
    research = [s for s in plan["data"]["steps"] if s.get("parallel_group") == 1]
    assert len(research) >= 2
    # The sub-agents ran in parallel: every research step started before the first finished.
    starts = [
        i
        for i, e in enumerate(events)
        if e["type"] == "step.started" and e["data"]["step_id"].startswith("research")
    ]
    ends = [
        i
        for i, e in enumerate(events)
        if e["type"] in ("step.completed", "step.failed")
        and e["data"]["step_id"].startswith("research")
    ]
    assert len(starts) == len(research) and max(starts) < min(ends)
    sources = {e["data"]["source_id"]: e["data"] for e in events if e["type"] == "source.found"}
    assert sources and len(sources) == types.count("source.found")
    deltas = [e for e in events if e["type"] == "message.delta"]
    assert len(deltas) >= 3
    report = "".join(d["data"]["text"] for d in sorted(deltas, key=lambda d: d["data"]["index"]))
    assert report.startswith("# ") and "## Sources" in report
    content = next(e for e in events if e["type"] == "content.stored")["data"]["content"]
    claims = [c for s in content["sections"] for c in s["claims"]]
    assert claims
    for claim in claims:
        assert claim["citations"], claim
        for cite in claim["citations"]:
            assert cite["passage"] in sources[cite["source_id"]]["passage"]
    # Every orchestrator event names its cause and carries the request's trace.
    trace_id = events[0]["trace"].split("-")[1]
    ours = [e for e in events if e["producer"].startswith("orchestrator")]
    assert ours and all(e.get("causation_id") for e in ours)
    assert {e["trace"].split("-")[1] for e in ours} == {trace_id}
    ready = [e for e in events if e["type"] == "deliverable.ready"]
    assert [e["data"]["kind"] for e in ready] == ["report"]
    assert events[-1]["data"].get("partial", False) is False, events[-1]["data"]


async def test_vague_question_pauses_for_clarification_and_continues(platform, corpus) -> None:
    h = platform.headers()
    async with httpx.AsyncClient(timeout=30) as client:
        resp = await client.post(
            f"{platform.url}/v1/runs",
            json={"question": "Can you help me?", "options": {"deliverables": []}},
            headers=h,
        )
        run_id = resp.json()["id"]
        events = await wait_for_event(client, platform.url, run_id, h, {"clarification.requested"})
        asked = events[-1]["data"]
        assert asked["question"] and asked["timeout_s"] > 0
        # Answering something that is not a question of this run is refused clearly.
        other = await client.post(
            f"{platform.url}/v1/runs/run_01JD6Q0W7XKZ3T9M4N5P6R8S2V/clarification",
            json={"answer": "x"},
            headers=h,
        )
        assert other.status_code == 404
        empty = await client.post(
            f"{platform.url}/v1/runs/{run_id}/clarification", json={"answer": " "}, headers=h
        )
        assert empty.status_code == 422
        resp = await client.post(
            f"{platform.url}/v1/runs/{run_id}/clarification",
            json={"answer": "exceptions and the try statement"},
            headers=h,
        )
        assert resp.status_code == 202, resp.text
        events, _ = await sse_events(client, platform.url, run_id, h)
        again = await client.post(
            f"{platform.url}/v1/runs/{run_id}/clarification", json={"answer": "x"}, headers=h
        )
    types = [e["type"] for e in events]
    assert types[-1] == "run.completed", types
    assert types.index("clarification.answered") < types.index("plan.proposed")
    assert again.status_code == 409
    assert again.headers["content-type"].startswith("application/problem+json")


async def test_same_start_command_delivered_twice_is_one_run(platform, corpus, js) -> None:
    h = platform.headers()
    async with httpx.AsyncClient(timeout=30) as client:
        resp = await client.post(
            f"{platform.url}/v1/runs",
            json={"question": QUESTION, "options": {"deliverables": []}},
            headers=h,
        )
        run_id = resp.json()["id"]
        # The same command again, past deduplication (as a redelivery would bring it).
        await bus.publish(
            js,
            subjects.START_RUN,
            StartRun(command_id=f"start-{run_id}", run_id=run_id, tenant_id=corpus),
            msg_id=f"start-{run_id}-again",
        )
        events, _ = await sse_events(client, platform.url, run_id, h)
        after = await json_events(client, platform.url, run_id, h)
    types = [e["type"] for e in events]
    assert types[-1] == "run.completed"
    assert types.count("run.started") == 1 and types.count("plan.proposed") == 1
    assert len({e["id"] for e in events}) == len(events)
    assert len(after) == len(events)  # nothing after the terminal event
