"""The openai provider in the real platform, against a local server speaking its protocol."""

from __future__ import annotations

import httpx
import pytest
from runloom.devkit.embedded import free_port
from runloom.devkit.runs import FakeOpenAI, sse_events

PORT = free_port()


@pytest.mark.platform_env(
    RUNLOOM_PROVIDER="openai",
    RUNLOOM_OPENAI_BASE_URL=f"http://127.0.0.1:{PORT}/v1",
    RUNLOOM_OPENAI_API_KEY="sk-local-test",
    RUNLOOM_OPENAI_MODEL="gpt-4o-mini",
)
@pytest.mark.platform_services("gateway", "billing", "orchestrator")
async def test_openai_run_shows_rate_limit_and_a_cut_stream(platform, corpus) -> None:
    # Sections are written one after another: the first meets a 429, the second a cut stream.
    async with FakeOpenAI(script=["429", "ok", "cut"], retry_after=0.5, port=PORT) as server:
        async with httpx.AsyncClient(timeout=30) as client:
            resp = await client.post(
                f"{platform.url}/v1/runs",
                json={
                    "question": "How are exceptions raised and handled with try and except?",
                    "options": {"deliverables": []},
                },
                headers=platform.headers(),
            )
            events, _ = await sse_events(
                client, platform.url, resp.json()["id"], platform.headers()
            )
    types = [e["type"] for e in events]
    limited = next(e for e in events if e["type"] == "rate_limited")["data"]
    assert limited["provider"] == "openai" and limited["retry_after_s"] == 0.5
    assert limited["step_id"] == "write-1"
    first_done = next(
        i
        for i, e in enumerate(events)
        if e["type"] == "step.completed" and e["data"]["step_id"] == "write-1"
    )
    assert types.index("rate_limited") < first_done  # waited, then succeeded
    failed = next(e for e in events if e["type"] == "step.failed")["data"]
    assert failed["step_id"] == "write-2" and failed["reason"] == "provider_error"
    assert "cut midway" in failed["error"]
    done = events[-1]
    assert done["type"] == "run.completed" and done["data"]["partial"] is True
    assert any("cut midway" in m for m in done["data"]["missing"])
    usage = [
        e["data"]
        for e in events
        if e["type"] == "usage.recorded" and e["data"]["kind"] == "provider"
    ]
    assert usage and all(u["usage"]["input_tokens"] == 321 for u in usage)
    assert all(u["model"] == "gpt-4o-mini" and u["cost_usd"] > 0 for u in usage)
    assert server.requests[0]["model"] == "gpt-4o-mini" and server.requests[0]["stream"] is True
