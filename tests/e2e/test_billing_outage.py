"""Billing SIGKILLed mid-run: spending stops and the run waits visibly, then resumes when
billing is back, completes, and the ledger equals the sum of the run's usage events."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Any

import httpx
import pytest
from runloom.contracts.events import TERMINAL_TYPES
from runloom.devkit.runs import json_events, wait_for_event

QUESTION = "How do Python decorators and context managers work?"


async def _ended(client: httpx.AsyncClient, run_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        run = (await client.get(f"/v1/runs/{run_id}")).json()
        if run["ended_by"]:
            return run
        assert time.monotonic() < deadline, f"run did not end within {timeout}s: {run}"
        await asyncio.sleep(0.25)


@pytest.mark.platform_env(RUNLOOM_SEARCH_DELAY_S="1.0")
async def test_billing_killed_mid_run_the_run_waits_resumes_and_the_ledger_adds_up(
    platform, corpus
):
    h: dict[str, str] = {}
    async with httpx.AsyncClient(
        base_url=platform.url, headers=platform.headers(), timeout=15
    ) as c:
        r = await c.post("/v1/runs", json={"question": QUESTION, "options": {"deliverables": []}})
        assert r.status_code == 201, r.text
        run_id = r.json()["id"]
        # The searches are reserved and under way (each takes a second): kill billing now.
        await wait_for_event(c, platform.url, run_id, h, {"tool.called"})
        platform["billing-1"].kill()

        events = await wait_for_event(c, platform.url, run_id, h, {"billing.waiting"})
        waiting = next(e for e in events if e["type"] == "billing.waiting")
        assert "billing" in waiting["data"]["message"]
        assert not any(e["type"] in TERMINAL_TYPES for e in events)  # waiting, not failed
        usage_before = sum(e["type"] == "usage.recorded" for e in events)
        # Usage and budgets are billing's: while it is away they say so, and when to retry.
        for path, params in (("/v1/usage", {"run_id": run_id}), ("/v1/budget", {})):
            r = await c.get(path, params=params)
            assert r.status_code == 503, (path, r.status_code, r.text)
            assert r.headers["content-type"].startswith("application/problem+json")
            assert int(r.headers["retry-after"]) > 0 and "billing" in r.json()["detail"]
        platform["billing-1"].start()

        run = await _ended(c, run_id)
        assert run["ended_by"] == "run.completed", run
        events = await json_events(c, platform.url, run_id, h)
        types = [e["type"] for e in events]
        assert types.count("billing.waiting") == 1 and types.count("billing.resumed") == 1
        assert types.index("billing.waiting") < types.index("billing.resumed")
        assert types.count("usage.recorded") > usage_before  # the spending went on after

        usage = [e["data"] for e in events if e["type"] == "usage.recorded"]
        assert len({u["usage_id"] for u in usage}) == len(usage)
        event_total = sum(Decimal(repr(u["cost_usd"])) for u in usage)
        deadline = time.monotonic() + 20
        while True:
            mine = (await c.get("/v1/usage", params={"run_id": run_id})).json()
            if mine["totals"]["calls"] >= len(usage):
                break
            assert time.monotonic() < deadline, mine
            await asyncio.sleep(0.2)
        assert mine["totals"]["calls"] == len(usage)
        assert Decimal(repr(mine["total_usd"])) == event_total
        assert Decimal(repr(run["spent_usd"])) == event_total
