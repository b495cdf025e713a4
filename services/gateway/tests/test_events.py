"""GET /v1/runs/{id}/events: SSE history then live, resume, cursors, JSON pages, tokens."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
from runloom.contracts.events import RunCompleted, RunStarted, StepStarted
from runloom.contracts.ids import new_id
from runloom.gateway import _cursor
from runloom.gateway.store.tenants import create_tenant
from runloom.runtime.eventlog import EventLog

pytestmark = [
    pytest.mark.platform_services("gateway"),
    pytest.mark.platform_env(RUNLOOM_SSE_HEARTBEAT_S="0.3"),
]


async def new_run(c: httpx.AsyncClient, js) -> tuple[str, str, EventLog]:
    run = (await c.post("/v1/runs", json={"question": "stream me"})).json()
    log = EventLog(js, "test-writer")
    tenant = (await log.events(run["id"]))[0].tenant_id
    return run["id"], tenant, log


async def test_history_then_live_then_closes(platform, js, reader):
    async with httpx.AsyncClient(base_url=platform.url, headers=platform.headers()) as c:
        run_id, tenant, log = await new_run(c, js)
        await log.append(run_id, tenant, RunStarted(worker="w"))
        r = reader()
        task = asyncio.create_task(r.read(c, f"/v1/runs/{run_id}/events"))
        for i in range(5):
            await log.append(run_id, tenant, StepStarted(step_id=f"s{i}"))
        await log.append(run_id, tenant, RunCompleted())
        await asyncio.wait_for(task, 20)
        assert r.ended and r.status == 200
        assert r.seqs() == list(range(1, 9))
        assert [e.event for e in r.events][:2] == ["run.created", "run.started"]
        assert r.events[-1].event == "run.completed"
        assert all(e.json["run_id"] == run_id for e in r.events)
        assert len({e.id for e in r.events}) == 8  # one cursor per event


async def test_heartbeats_keep_an_idle_stream_alive(platform, js, reader, poll):
    async with httpx.AsyncClient(base_url=platform.url, headers=platform.headers()) as c:
        run_id, tenant, log = await new_run(c, js)
        r = reader()
        task = asyncio.create_task(r.read(c, f"/v1/runs/{run_id}/events"))

        async def one_client_one_run() -> bool:
            m = (await c.get("/metrics/streaming")).json()
            return m["sse_clients"] == 1 and m["runs_followed"] == 1

        await poll(one_client_one_run)
        deadline = asyncio.get_running_loop().time() + 10
        while r.comments < 4 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        assert r.comments >= 4  # retry + several keep-alives, with no event in between
        await log.append(run_id, tenant, RunCompleted())
        await asyncio.wait_for(task, 10)
        assert r.seqs() == [1, 2]

        async def archived_and_released() -> bool:
            m = (await c.get("/metrics/streaming")).json()
            return m["sse_clients"] == 0 and m["archive_lag_events"] == 0

        await poll(archived_and_released)


async def test_resume_header_wins_and_cursor_after_the_end(platform, js, reader):
    async with httpx.AsyncClient(base_url=platform.url, headers=platform.headers()) as c:
        run_id, tenant, log = await new_run(c, js)
        for i in range(6):
            await log.append(run_id, tenant, StepStarted(step_id=f"s{i}"))
        first = reader()
        await first.read(c, f"/v1/runs/{run_id}/events", stop=lambda e: e.seq == 3)
        early, later = first.events[1].id, first.events[2].id  # seq 2 and 3
        await log.append(run_id, tenant, RunCompleted())  # the run ends after the cursor

        resumed = reader()
        await resumed.read(
            c,
            f"/v1/runs/{run_id}/events",
            headers={"Last-Event-ID": later},
            params={"last_event_id": early},
        )
        assert resumed.seqs() == [4, 5, 6, 7, 8]  # the header won; nothing twice
        by_query = reader()
        await by_query.read(c, f"/v1/runs/{run_id}/events", params={"last_event_id": early})
        assert by_query.seqs() == [3, 4, 5, 6, 7, 8]
        at_end = reader()
        await at_end.read(
            c, f"/v1/runs/{run_id}/events", headers={"Last-Event-ID": resumed.last_id}
        )
        assert at_end.ended and at_end.seqs() == []


async def test_bad_cursors_answer_400_saying_why(platform, js, reader):
    async with httpx.AsyncClient(base_url=platform.url, headers=platform.headers()) as c:
        run_a, tenant, log = await new_run(c, js)
        run_b, _, _ = await new_run(c, js)
        r = reader()
        await r.read(c, f"/v1/runs/{run_a}/events", stop=lambda e: True)
        good = _cursor.decode(r.last_id)
        future = _cursor.Cursor(good.epoch, run_a, 99, good.stream_seq + 1000).encode()
        for cursor, words in [
            ("garbage", "malformed"),
            ("c1!!!", "malformed"),
            (r.last_id, "another run"),
            (future, "future"),
        ]:
            url = f"/v1/runs/{run_b if cursor == r.last_id else run_a}/events"
            for kind in ("header", "json"):
                if kind == "header":
                    resp = await c.get(url, headers={"Last-Event-ID": cursor})
                else:
                    resp = await c.get(url, params={"format": "json", "after": cursor})
                assert resp.status_code == 400, (cursor, resp.text)
                assert resp.headers["content-type"].startswith("application/problem+json")
                assert words in resp.json()["detail"]


async def test_json_pages_the_same_history(platform, js, reader):
    async with httpx.AsyncClient(base_url=platform.url, headers=platform.headers()) as c:
        run_id, tenant, log = await new_run(c, js)
        for i in range(9):
            await log.append(run_id, tenant, StepStarted(step_id=f"s{i}"))
        await log.append(run_id, tenant, RunCompleted())
        seqs: list[int] = []
        after = None
        pages = 0
        while True:
            params = {"format": "json", "limit": "4", **({"after": after} if after else {})}
            page = (await c.get(f"/v1/runs/{run_id}/events", params=params)).json()
            pages += 1
            seqs += [item["event"]["seq"] for item in page["events"]]
            after = page["next_cursor"]
            if page["done"]:
                break
        assert seqs == list(range(1, 12)) and pages == 3
        sse = reader()
        await sse.read(c, f"/v1/runs/{run_id}/events")
        assert [e.id for e in sse.events][-1] == after  # the same cursors


async def test_other_tenants_get_404_for_runs_events_and_tokens(platform, js, pool, reader):
    other_key = await create_tenant(pool, f"other-{uuid.uuid4().hex[:8]}", "other")
    async with httpx.AsyncClient(base_url=platform.url, headers=platform.headers()) as c:
        run_id, tenant, log = await new_run(c, js)
        token = (await c.post(f"/v1/runs/{run_id}/stream-token")).json()["token"]
        other_run, _, _ = await new_run(c, js)
    async with httpx.AsyncClient(
        base_url=platform.url, headers={"Authorization": f"Bearer {other_key}"}
    ) as o:
        for method, path in [
            ("GET", f"/v1/runs/{run_id}"),
            ("GET", f"/v1/runs/{run_id}/events"),
            ("GET", f"/v1/runs/{run_id}/events?format=json"),
            ("POST", f"/v1/runs/{run_id}/cancel"),
            ("POST", f"/v1/runs/{run_id}/stream-token"),
        ]:
            resp = await o.request(method, path)
            assert resp.status_code == 404, (path, resp.text)
        assert run_id not in str((await o.get("/v1/runs")).json())
    async with httpx.AsyncClient(base_url=platform.url) as anon:
        # The token opens its own run's events, nothing else.
        r = reader()
        await r.read(
            anon, f"/v1/runs/{run_id}/events", params={"token": token}, stop=lambda e: True
        )
        assert r.status == 200 and r.seqs() == [1]
        for path in [f"/v1/runs/{other_run}/events", f"/v1/runs/{run_id}", "/v1/runs"]:
            resp = await anon.get(path, params={"token": token})
            assert resp.status_code in (401, 404), (path, resp.text)
        forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
        resp = await anon.get(f"/v1/runs/{run_id}/events", params={"token": forged})
        assert resp.status_code == 401
    logs = platform.logs()
    assert token not in logs


async def test_plain_streams_and_the_route_answer_alike(platform, js, pool, reader):
    """A plain stream request is answered ahead of FastAPI's routing; the same request with a
    parameter the stream ignores goes through the route: each answer is the same either way."""
    other_key = await create_tenant(pool, f"other-{uuid.uuid4().hex[:8]}", "other")
    async with httpx.AsyncClient(base_url=platform.url, headers=platform.headers()) as c:
        run_id, tenant, log = await new_run(c, js)
        await log.append(run_id, tenant, RunCompleted())
        r = reader()
        await r.read(c, f"/v1/runs/{run_id}/events")
        cases = [
            ({}, run_id, None),
            ({"Authorization": "Bearer not-a-key"}, run_id, None),
            ({"Authorization": "Basic x"}, run_id, None),
            ({"Authorization": f"Bearer {other_key}"}, run_id, None),
            (platform.headers(), new_id("run"), None),
            (platform.headers(), run_id, "garbage"),
            (platform.headers(), run_id, "x" * 301),
            (platform.headers(), "run_nope", None),
        ]
        for headers, run, cursor in cases:
            params = {"last_event_id": cursor} if cursor else {}
            async with httpx.AsyncClient(base_url=platform.url, headers=headers) as h:
                plain = await h.get(f"/v1/runs/{run}/events", params=params)
                routed = await h.get(f"/v1/runs/{run}/events", params={**params, "ignored": "1"})
            assert plain.status_code >= 400, (headers, run, cursor)
            assert (plain.status_code, plain.json()) == (routed.status_code, routed.json())
            assert plain.headers["content-type"] == routed.headers["content-type"]
            assert plain.headers.get("www-authenticate") == routed.headers.get("www-authenticate")
        for params in ({}, {"ignored": "1"}, {"last_event_id": r.events[0].id}):
            again = reader()
            await again.read(c, f"/v1/runs/{run_id}/events", params=params)
            assert again.status == 200 and again.ended
            assert again.seqs() == (r.seqs()[1:] if "last_event_id" in params else r.seqs())
