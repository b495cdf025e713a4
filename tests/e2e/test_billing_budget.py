"""A budget stops a run before it overspends; what was produced so far stays downloadable."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
from runloom.billing_client import load_prices
from runloom.devkit.runs import json_events
from runloom.devkit.testing import wait_ended, wait_usage
from runloom.orchestrator.providers.base import WriteRequest

QUESTION = "How do Python decorators and context managers work?"


def _client(platform: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=platform.url, headers=platform.headers(), timeout=15)


def _costs(events: list[dict[str, Any]]) -> list[Decimal]:
    return [Decimal(repr(e["data"]["cost_usd"])) for e in events if e["type"] == "usage.recorded"]


async def _run(client: httpx.AsyncClient, platform: Any, budget: float | None) -> tuple[str, dict]:
    body: dict[str, Any] = {"question": QUESTION, "options": {"deliverables": ["report"]}}
    if budget is not None:
        body["budget_usd"] = budget
    r = await client.post("/v1/runs", json=body)
    assert r.status_code == 201, r.text
    run_id = r.json()["id"]
    return run_id, await wait_ended(client, run_id)


async def test_a_tiny_budget_ends_in_budget_stopped_within_budget_with_the_report_kept(
    platform, corpus
):
    async with _client(platform) as client:
        # The offline provider is deterministic: a free run shows what each call costs.
        free_id, free = await _run(client, platform, None)
        assert free["ended_by"] == "run.completed", free
        full_events = await json_events(client, platform.url, free_id, {})
        usage = [e["data"] for e in full_events if e["type"] == "usage.recorded"]
        research = sum(Decimal(repr(u["cost_usd"])) for u in usage if u["kind"] == "tool")
        writes = [Decimal(repr(u["cost_usd"])) for u in usage if u["kind"] == "provider"]
        assert len(writes) >= 2, "the run should write more than one section"

        # The writer reserves its prompt plus the longest answer it may give; sections are
        # written one after another. This budget covers the research, the first section and
        # the reservation of one more answer, but not the second section's prompt on top:
        # the first section is written, the second is refused before it is spent.
        answer = Decimal(WriteRequest.__dataclass_fields__["max_output_tokens"].default)
        price = load_prices().model_price(usage[-1]["provider"], usage[-1]["model"])
        budget = float(research + writes[0] + answer * price.output_per_mtok / 1_000_000)
        run_id, run = await _run(client, platform, budget)
        assert run["ended_by"] == "run.budget_stopped", run
        events = await json_events(client, platform.url, run_id, {})
        assert events[-1]["type"] == "run.budget_stopped"  # and nothing after it
        assert [e["type"] for e in events].count("run.budget_stopped") == 1
        stop = events[-1]["data"]
        assert stop["scope"] == "run" and stop["budget_usd"] == budget
        spent = sum(_costs(events))
        assert 0 < spent <= Decimal(repr(budget))
        # What the stop tells the user is what the run's usage events add up to.
        assert abs(Decimal(repr(stop["spent_usd"])) - spent) < Decimal("0.0000001"), stop
        assert run["spent_usd"] <= budget
        warnings = [e["data"] for e in events if e["type"] == "budget.warning"]
        # At most one warning (a reservation may jump from below 80% straight to refused).
        assert [w["scope"] for w in warnings] in ([], ["run"])

        usage = await wait_usage(client, run_id, len(_costs(events)))
        assert Decimal(repr(usage["total_usd"])) == spent <= Decimal(repr(budget))

        # The partial report: what was written before the stop renders and downloads.
        listing = (await client.get(f"/v1/runs/{run_id}/deliverables")).json()
        report = next(d for d in listing["deliverables"] if d["kind"] == "report")
        assert report["status"] == "ready", report
        md = next(a for a in report["artifacts"] if a["format"] == "md")
        r = await client.get(md["url"])
        assert r.status_code == 200 and len(r.text) > 100
        content = next(e for e in events if e["type"] == "content.stored")["data"]["content"]
        assert len(content.get("sections", [])) == 1, "the first section should be kept"
        for section in content["sections"]:
            assert section["title"] in r.text

        again = await json_events(client, platform.url, run_id, {})
        assert len(again) == len(events)  # still nothing after the terminal event


async def test_a_tenant_budget_stops_the_run_with_scope_tenant(platform, corpus):
    async with _client(platform) as client:
        r = await client.put("/v1/budget", json={"amount_usd": 0.0005, "period": "month"})
        assert r.status_code == 200, r.text
        run_id, run = await _run(client, platform, None)
        assert run["ended_by"] == "run.budget_stopped", run
        events = await json_events(client, platform.url, run_id, {})
        assert events[-1]["data"]["scope"] == "tenant"
        assert sum(_costs(events)) <= Decimal("0.0005")
        budget = (await client.get("/v1/budget")).json()
        assert budget["spent_usd"] <= 0.0005
