"""POST/GET/cancel runs through a real gateway process."""

from __future__ import annotations

import asyncio

import httpx
import pytest
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


async def test_cancel_before_start_ends_the_run_at_once_and_after_end_is_409(platform, js, poll):
    async with httpx.AsyncClient(base_url=platform.url, headers=platform.headers()) as c:
        run = (await c.post("/v1/runs", json={"question": "cancel me"})).json()
        r = await c.post(f"/v1/runs/{run['id']}/cancel", json={"reason": "changed my mind"})
        assert r.status_code == 202, r.text
        # Nobody was working on it (no orchestrator here): the answer already ended it.
        events = await EventLog(js, "test").events(run["id"])
        assert [e.type for e in events] == ["run.created", "cancel.requested", "run.cancelled"]
        assert events[-1].causation_id == events[-2].id

        async def cancelled() -> bool:
            view = (await c.get(f"/v1/runs/{run['id']}")).json()
            return bool(view["status"] == "cancelled" and view["cancel_requested"])

        await poll(cancelled)
        r = await c.post(f"/v1/runs/{run['id']}/cancel")
        assert r.status_code == 409
        assert "was already cancelled" in r.json()["detail"]


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
