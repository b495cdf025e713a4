"""Faults through the gateway with real processes: a SIGKILLed owner, cancellation."""

from __future__ import annotations

import time
from datetime import datetime

import httpx
import pytest
from runloom.devkit.runs import json_events, sse_events, wait_for_event

QUESTION = "How do Python decorators and context managers work?"
TERMINAL = {"run.completed", "run.failed", "run.cancelled", "run.budget_stopped"}


def _t(event: dict) -> float:
    return datetime.fromisoformat(event["time"].replace("Z", "+00:00")).timestamp()


async def _post_run(client: httpx.AsyncClient, platform, **options) -> str:
    resp = await client.post(
        f"{platform.url}/v1/runs",
        json={"question": QUESTION, "options": {"deliverables": [], **options}},
        headers=platform.headers(),
    )
    assert resp.status_code == 201, resp.text
    return resp.json()["id"]


@pytest.mark.platform_env(RUNLOOM_REPORT_DELTA_INTERVAL_S="0.25")
@pytest.mark.platform_services("gateway", "billing", "orchestrator")
@pytest.mark.parametrize("how", ["sigkill", "sigterm"])
async def test_owner_dies_mid_run_the_other_replica_finishes_once(platform, corpus, how) -> None:
    platform.add("orchestrator")
    h = platform.headers()
    async with httpx.AsyncClient(timeout=30) as client:
        run_id = await _post_run(client, platform)
        events = await wait_for_event(client, platform.url, run_id, h, {"message.delta"})
        owner = next(e for e in events if e["type"] == "run.started")["data"]["worker"]
        proc = platform[owner.split("/", 1)[1]]
        stopped = time.monotonic()
        proc.kill() if how == "sigkill" else proc.stop()
        events, arrivals = await sse_events(client, platform.url, run_id, h, timeout=60)
    taken_over = next(
        arrivals[i] for i, e in enumerate(events) if e["type"] == "run.started" and i > 1
    )
    # SIGTERM hands the run over at once (nak); SIGKILL waits for the ack deadline (6 s).
    assert taken_over - stopped < (3.0 if how == "sigterm" else 12.0)
    async with httpx.AsyncClient(timeout=30) as client:
        history = await json_events(client, platform.url, run_id, h)
    types = [e["type"] for e in events]
    assert types[-1] == "run.completed", types
    assert sum(t in TERMINAL for t in types) == 1 and len(history) == len(events)
    assert len({e["id"] for e in events}) == len(events)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    started = [e["data"] for e in events if e["type"] == "run.started"]
    assert [s.get("attempt", 1) for s in started] == [1, 2]
    assert started[0]["worker"] != started[1]["worker"]
    completed = [e["data"]["step_id"] for e in events if e["type"] == "step.completed"]
    assert len(completed) == len(set(completed))
    sources = [e["data"]["source_id"] for e in events if e["type"] == "source.found"]
    assert len(sources) == len(set(sources))
    calls = [e["data"]["call_id"] for e in events if e["type"] == "tool.called"]
    assert len(calls) == len(set(calls))
    indices = [e["data"]["index"] for e in events if e["type"] == "message.delta"]
    assert sorted(indices) == list(range(len(indices)))
    report = "".join(
        e["data"]["text"]
        for e in sorted(
            (e for e in events if e["type"] == "message.delta"), key=lambda e: e["data"]["index"]
        )
    )
    assert report.count("# ") >= 1 and report.count("## Sources") == 1
    content = next(e for e in events if e["type"] == "content.stored")["data"]["content"]
    for section in content["sections"]:
        assert report.count(f"## {section['title']}\n") == 1  # no section written twice


@pytest.mark.platform_services("gateway", "billing")
async def test_cancel_before_start(platform, corpus) -> None:
    h = platform.headers()
    async with httpx.AsyncClient(timeout=30) as client:
        run_id = await _post_run(client, platform)
        resp = await client.post(f"{platform.url}/v1/runs/{run_id}/cancel", headers=h)
        assert resp.status_code == 202
        platform.add("orchestrator")
        events, _ = await sse_events(client, platform.url, run_id, h)
    assert [e["type"] for e in events] == ["run.created", "cancel.requested", "run.cancelled"]


async def _cancel_when(platform, seen: str) -> list[dict]:
    h = platform.headers()
    async with httpx.AsyncClient(timeout=30) as client:
        run_id = await _post_run(client, platform)
        await wait_for_event(client, platform.url, run_id, h, {seen})
        resp = await client.post(f"{platform.url}/v1/runs/{run_id}/cancel", headers=h)
        assert resp.status_code == 202
        events, _ = await sse_events(client, platform.url, run_id, h)
        history = await json_events(client, platform.url, run_id, h)
    types = [e["type"] for e in events]
    assert types[-1] == "run.cancelled", types
    assert len(history) == len(events)  # nothing after it
    asked = next(e for e in events if e["type"] == "cancel.requested")
    assert _t(events[-1]) - _t(asked) < 2.0
    return events


@pytest.mark.platform_env(RUNLOOM_SEARCH_DELAY_S="20")
@pytest.mark.platform_services("gateway", "billing", "orchestrator")
async def test_cancel_during_a_search(platform, corpus) -> None:
    events = await _cancel_when(platform, "tool.called")
    types = [e["type"] for e in events]
    assert "tool.result" not in types and "plan.proposed" in types


@pytest.mark.platform_env(RUNLOOM_REPORT_DELTA_INTERVAL_S="0.5")
@pytest.mark.platform_services("gateway", "billing", "orchestrator")
async def test_cancel_during_streaming(platform, corpus) -> None:
    events = await _cancel_when(platform, "message.delta")
    types = [e["type"] for e in events]
    assert "content.stored" not in types and "message.delta" in types
