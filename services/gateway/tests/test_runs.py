"""POST/GET/cancel runs through a real gateway process."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from runloom.contracts.events import RunCompleted, RunStarted
from runloom.runtime.eventlog import EventLog

pytestmark = pytest.mark.platform_services("gateway")


async def test_create_validates_and_is_idempotent(platform, js):
    async with httpx.AsyncClient(base_url=platform.url, headers=platform.headers()) as c:
        for body, words in [
            ({"question": "  "}, "must not be empty"),
            ({"question": "q", "bogus": 1}, "bogus"),
            ({"question": "q", "budget_usd": -1}, "budget_usd"),
            ({"question": "q", "options": {"deliverables": ["poster"]}}, "poster"),
        ]:
            r = await c.post("/v1/runs", json=body)
            assert r.status_code == 422, r.text
            assert r.headers["content-type"].startswith("application/problem+json")
            assert words in r.json()["detail"]

        body = {"question": "What is JetStream?", "options": {"deliverables": ["report"]}}
        first = await c.post("/v1/runs", json=body, headers={"Idempotency-Key": "k1"})
        assert first.status_code == 201, first.text
        run = first.json()
        assert run["status"] == "created" and run["question"] == "What is JetStream?"
        again = await c.post("/v1/runs", json=body, headers={"Idempotency-Key": "k1"})
        assert again.status_code == 200 and again.json()["id"] == run["id"]
        other = await c.post(
            "/v1/runs", json={"question": "Something else"}, headers={"Idempotency-Key": "k1"}
        )
        assert other.status_code == 422 and "different request body" in other.json()["detail"]

        log = EventLog(js, "test")
        events = await log.events(run["id"])
        assert [e.type for e in events] == ["run.created"]  # once, despite the replay
        assert (await c.get(f"/v1/runs/{run['id']}")).json()["id"] == run["id"]


async def test_list_pages_newest_first(platform):
    async with httpx.AsyncClient(base_url=platform.url, headers=platform.headers()) as c:
        ids = [
            (await c.post("/v1/runs", json={"question": f"q{i}"})).json()["id"] for i in range(5)
        ]
        seen: list[str] = []
        cursor = None
        while True:
            params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
            page = (await c.get("/v1/runs", params=params)).json()
            seen += [r["id"] for r in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == list(reversed(ids))
        bad = await c.get("/v1/runs", params={"cursor": "!!!"})
        assert bad.status_code == 400


async def test_cancel_before_start_and_after_end(platform, js, poll):
    async with httpx.AsyncClient(base_url=platform.url, headers=platform.headers()) as c:
        run = (await c.post("/v1/runs", json={"question": "cancel me"})).json()
        r = await c.post(f"/v1/runs/{run['id']}/cancel", json={"reason": "changed my mind"})
        assert r.status_code == 202, r.text

        async def flagged() -> bool:
            return (await c.get(f"/v1/runs/{run['id']}")).json()["cancel_requested"]

        await poll(flagged)
        log = EventLog(js, "test")
        tenant = (await log.events(run["id"]))[0].tenant_id
        await log.append(run["id"], tenant, RunStarted(worker="w"))
        await log.append(run["id"], tenant, RunCompleted(summary="done"))
        r = await c.post(f"/v1/runs/{run['id']}/cancel")
        assert r.status_code == 409
        assert "completed" in r.json()["detail"]

        async def completed() -> bool:
            return (await c.get(f"/v1/runs/{run['id']}")).json()["status"] == "completed"

        await poll(completed)


async def test_concurrent_retries_with_one_key_make_one_run(platform, js):
    async with httpx.AsyncClient(base_url=platform.url, headers=platform.headers()) as c:
        body = {"question": "once only", "budget_usd": 0.5}
        answers = await asyncio.gather(
            *(c.post("/v1/runs", json=body, headers={"Idempotency-Key": "same"}) for _ in range(6))
        )
        assert sorted(a.status_code for a in answers) == [200] * 5 + [201]
        ids = {a.json()["id"] for a in answers}
        assert len(ids) == 1
        events = await EventLog(js, "test").events(ids.pop())
        assert [e.type for e in events] == ["run.created"]
