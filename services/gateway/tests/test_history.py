"""Resuming past the hot window: the archive serves it; a hole nobody holds is a reset."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from runloom.contracts import subjects
from runloom.contracts.events import RunCompleted, StepStarted
from runloom.gateway.store.archive import PgArchive
from runloom.runtime.eventlog import EventLog

pytestmark = pytest.mark.platform_services("gateway")


async def _archived(pool, run_id: str, n: int, poll) -> None:
    async def check() -> bool:
        return await pool.fetchval("SELECT count(*) FROM run_events WHERE run_id=$1", run_id) >= n

    await poll(check)


async def test_a_cursor_older_than_the_hot_window_resumes_from_the_archive(
    platform, js, pool, reader, poll
):
    async with httpx.AsyncClient(base_url=platform.url, headers=platform.headers()) as c:
        run_id = (await c.post("/v1/runs", json={"question": "old"})).json()["id"]
        log = EventLog(js, "w", archive=PgArchive(pool))
        tenant = (await log.events(run_id))[0].tenant_id
        for i in range(5):
            await log.append(run_id, tenant, StepStarted(step_id=f"s{i}"))
        early = reader()
        await early.read(c, f"/v1/runs/{run_id}/events", stop=lambda e: e.seq == 2)
        await _archived(pool, run_id, 6, poll)
        # The hot window drops the run's messages (what max_age does, here at once).
        await js.purge_stream(subjects.RUN_EVENTS_STREAM, subject=subjects.run_events(run_id))

        resumed = reader()
        resumed.last_id = early.last_id
        task = asyncio.create_task(resumed.read(c, f"/v1/runs/{run_id}/events"))
        await poll(lambda: _true(len(resumed.events) >= 4))
        # Live events after the expiry go on from seq 7, and reach the same client.
        for i in range(2):
            await log.append(run_id, tenant, StepStarted(step_id=f"late{i}"))
        await log.append(run_id, tenant, RunCompleted())
        await asyncio.wait_for(task, 20)
        assert resumed.seqs() == list(range(3, 10))
        page = (
            await c.get(f"/v1/runs/{run_id}/events", params={"format": "json", "limit": "100"})
        ).json()
        assert [i["event"]["seq"] for i in page["events"]] == list(range(1, 10)) and page["done"]


async def test_a_hole_nobody_holds_becomes_an_explicit_reset(platform, js, pool, reader, poll):
    async with httpx.AsyncClient(base_url=platform.url, headers=platform.headers()) as c:
        run_id = (await c.post("/v1/runs", json={"question": "lost"})).json()["id"]
        log = EventLog(js, "w", archive=PgArchive(pool))
        tenant = (await log.events(run_id))[0].tenant_id
        for i in range(5):
            await log.append(run_id, tenant, StepStarted(step_id=f"s{i}"))
        await _archived(pool, run_id, 6, poll)
        await js.purge_stream(subjects.RUN_EVENTS_STREAM, subject=subjects.run_events(run_id))
        await pool.execute("DELETE FROM run_events WHERE run_id=$1 AND seq IN (3, 4)", run_id)
        await log.append(run_id, tenant, RunCompleted())
        r = reader()
        await r.read(c, f"/v1/runs/{run_id}/events")
        kinds = [(e.event, e.json.get("seq")) for e in r.events]
        assert kinds[:2] == [("run.created", 1), ("step.started", 2)]
        assert kinds[2][0] == "reset" and kinds[2][1] == 4
        reset = r.events[2].json
        assert "3..4" in reset["reason"] and reset["snapshot"]["run_id"] == run_id
        assert [s for _, s in kinds[3:]] == [5, 6, 7]


async def _true(value: bool) -> bool:
    return value
