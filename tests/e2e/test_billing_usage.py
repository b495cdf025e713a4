"""Billing through the HTTP API, as a user sees it: a run's usage and spend, the tenant's usage
grouped by day, run and model, the period budget, and nothing of another tenant's."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
from runloom.devkit.runs import json_events
from runloom.devkit.testing import wait_ended, wait_usage
from runloom.gateway.store.tenants import create_tenant
from runloom.runtime import db

QUESTION = "How do Python decorators and context managers work?"


def _client(platform: Any, key: str | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=platform.url,
        headers={"Authorization": f"Bearer {key or platform.api_key}"},
        timeout=15,
    )


async def test_a_runs_spend_is_metered_priced_and_visible_only_to_its_tenant(platform, corpus):
    async with _client(platform) as client:
        r = await client.post(
            "/v1/runs", json={"question": QUESTION, "options": {"deliverables": []}}
        )
        assert r.status_code == 201, r.text
        run_id = r.json()["id"]
        run = await wait_ended(client, run_id)
        assert run["ended_by"] == "run.completed", run
        events = await json_events(client, platform.url, run_id, {})
        usage = [e["data"] for e in events if e["type"] == "usage.recorded"]
        kinds = {u["kind"] for u in usage}
        assert kinds == {"provider", "tool"}, kinds  # the writer and the corpus searches
        assert all(u["cost_usd"] > 0 for u in usage)  # offline is priced, so budgets bite
        event_total = sum(Decimal(repr(u["cost_usd"])) for u in usage)

        mine = await wait_usage(client, run_id, len(usage))
        assert mine["totals"]["calls"] == len(usage)
        assert Decimal(repr(mine["total_usd"])) == event_total
        assert {i["usage_id"] for i in mine["items"]} == {u["usage_id"] for u in usage}
        assert all(i["price_version"] for i in mine["items"])
        assert mine["held_usd"] == 0  # every reservation of the ended run was settled
        # The run's own view carries the same spend (projected from the same events).
        assert Decimal(repr((await client.get(f"/v1/runs/{run_id}")).json()["spent_usd"])) == (
            event_total
        )

        by_model = (await client.get("/v1/usage", params={"group_by": "model"})).json()
        keys = {g["model"] for g in by_model["groups"]}
        expected = {
            f"{u['provider']}/{u['model']}" if u["kind"] == "provider" else f"tool:{u['tool']}"
            for u in usage
        }
        assert expected == keys and "tool:corpus_search" in keys
        by_run = (await client.get("/v1/usage", params={"group_by": "run"})).json()
        assert run_id in {g["run"] for g in by_run["groups"]}
        by_day = (await client.get("/v1/usage")).json()
        assert by_day["group_by"] == "day" and by_day["total_usd"] >= float(event_total)

    # Another tenant sees none of it.
    pool = await db.create_pool(platform.settings.effective_database_url, max_size=2)
    try:
        other_key = await create_tenant(pool, f"other-{run_id[-8:]}", "other")
    finally:
        await pool.close()
    async with _client(platform, other_key) as other:
        r = await other.get("/v1/usage", params={"run_id": run_id})
        assert r.status_code == 404
        assert r.headers["content-type"].startswith("application/problem+json")
        for group in ("day", "run", "model"):
            page = (await other.get("/v1/usage", params={"group_by": group})).json()
            assert page["groups"] == [] and page["total_usd"] == 0
        assert (await other.get("/v1/budget")).json()["spent_usd"] == 0


async def test_budget_is_set_read_and_bad_input_is_explained(platform):
    async with _client(platform) as client:
        r = await client.get("/v1/budget")
        assert r.status_code == 200 and r.json()["amount_usd"] is None
        r = await client.put("/v1/budget", json={"amount_usd": 12.5, "period": "month"})
        assert r.status_code == 200, r.text
        assert r.json()["amount_usd"] == 12.5 and r.json()["remaining_usd"] == 12.5
        assert (await client.get("/v1/budget")).json()["amount_usd"] == 12.5

        for body, field in [
            ({"amount_usd": -1}, "amount_usd"),
            ({"amount_usd": "lots"}, "amount_usd"),
            ({"amount_usd": 5, "period": "week"}, "period"),
            ({"amount_usd": 5, "tenant_id": "someone-else"}, "tenant_id"),
        ]:
            r = await client.put("/v1/budget", json=body)
            assert r.status_code == 422, (body, r.text)
            assert r.headers["content-type"].startswith("application/problem+json")
            assert field in r.json()["detail"]
        assert (await client.get("/v1/budget")).json()["amount_usd"] == 12.5

        for params, word in [
            ({"group_by": "week"}, "group_by"),
            ({"from": "yesterday"}, "from"),
            ({"from": "2026-11-02", "to": "2026-11-01"}, "before"),
            ({"run_id": "run_01JD6Q0W7XKZ3T9M4N5P6R8S2V", "group_by": "day"}, "not both"),
            ({"run_id": "run_x"}, "run_id"),
        ]:
            r = await client.get("/v1/usage", params=params)
            assert r.status_code == 422, (params, r.text)
            assert word in r.json()["detail"]
        r = await client.get("/v1/usage", params={"run_id": "run_01JD6Q0W7XKZ3T9M4N5P6R8S2V"})
        assert r.status_code == 404
        assert (await client.get("/v1/usage", headers={"Authorization": ""})).status_code == 401
