"""Latency a user feels: POST /v1/runs to the first SSE event and to run.completed (median of 10).

Run with `-s` to see the figures:
    uv run pytest tests/e2e/test_orchestrator_latency.py -q -s -m slow
"""

from __future__ import annotations

import statistics
import time

import httpx
import pytest
from runloom.devkit.runs import sse_events

pytestmark = pytest.mark.slow

QUESTIONS = [
    "How do Python decorators and context managers work?",
    "How do generators and the yield expression work?",
    "How are exceptions raised and handled with try and except?",
    "How do classes, inheritance and method resolution work?",
    "How does the import system find and load modules?",
]


@pytest.mark.parametrize("deliverables", [None, []], ids=["all-deliverables", "no-deliverables"])
async def test_latency_post_to_first_event_and_completion(platform, corpus, deliverables) -> None:
    firsts, completions, partial = [], [], 0
    options = {} if deliverables is None else {"deliverables": deliverables}
    async with httpx.AsyncClient(timeout=60) as client:
        for i in range(10):
            t0 = time.monotonic()
            resp = await client.post(
                f"{platform.url}/v1/runs",
                json={"question": QUESTIONS[i % len(QUESTIONS)], "options": options},
                headers=platform.headers(),
            )
            assert resp.status_code == 201, resp.text
            events, arrivals = await sse_events(
                client, platform.url, resp.json()["id"], platform.headers(), timeout=120
            )
            assert events[-1]["type"] == "run.completed", [e["type"] for e in events]
            partial += bool(events[-1]["data"].get("partial"))
            firsts.append(arrivals[0] - t0)
            completions.append(arrivals[-1] - t0)
    print(
        f"\n[{deliverables!r}] POST -> first SSE event:"
        f" median {statistics.median(firsts) * 1000:.0f} ms"
        f" (min {min(firsts) * 1000:.0f}, max {max(firsts) * 1000:.0f});"
        f" POST -> run.completed: median {statistics.median(completions):.2f} s"
        f" (min {min(completions):.2f}, max {max(completions):.2f}); partial runs: {partial}/10"
    )
    assert statistics.median(firsts) < 1.0
