"""The AG-UI routes on a real gateway, with a writer appending the run's events itself: the
stream resumes from any id, also once the hot window dropped the run (the archive serves it)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from ag_ui.core import Event as AguiEvent
from ag_ui_validate import ValidatorOptions, create_validator
from pydantic import TypeAdapter
from runloom.contracts import subjects
from runloom.contracts.events import (
    MessageDelta,
    PlanProposed,
    PlanStep,
    RunCompleted,
    RunStarted,
    StepCompleted,
    StepStarted,
)
from runloom.gateway import _cursor
from runloom.gateway.store.archive import PgArchive
from runloom.runtime.eventlog import EventLog

pytestmark = pytest.mark.platform_services("gateway")
EVENT = TypeAdapter(AguiEvent)


def clean(events: list[dict[str, Any]]) -> None:
    validator = create_validator(ValidatorOptions())
    found = [d for ev in events for d in validator.feed(ev)] + validator.finalize()
    assert not [d for d in found if d.severity != "info"], found
    for ev in events:
        EVENT.validate_python(ev)


async def test_resume_after_any_id_even_past_the_hot_window(platform, js, pool, reader, poll):
    async with httpx.AsyncClient(base_url=platform.url, headers=platform.headers()) as c:
        run_id = (await c.post("/v1/runs", json={"question": "What is AG-UI?"})).json()["id"]
        log = EventLog(js, "w", archive=PgArchive(pool))
        tenant = (await log.events(run_id))[0].tenant_id
        for payload in [
            RunStarted(worker="w"),
            PlanProposed(steps=[PlanStep(step_id="s1", title="Look", parallel_group=1)]),
            StepStarted(step_id="s1"),
            StepCompleted(step_id="s1"),
            *[MessageDelta(stream="report", text=f"part {i}. ", index=i) for i in range(4)],
            RunCompleted(),
        ]:
            await log.append(run_id, tenant, payload)
        whole = reader()
        await whole.read(c, f"/v1/agui/runs/{run_id}")
        events = [e.json for e in whole.events]
        clean(events)
        assert [e["type"] for e in events][-2:] == ["TEXT_MESSAGE_END", "RUN_FINISHED"]
        ids = [e.id for e in whole.events]
        assert all(ids) and len(set(ids)) == len(ids)
        # Cut inside the report message, then the hot window drops the run (max_age, at once).
        cut = next(i for i, e in enumerate(events) if e["type"] == "TEXT_MESSAGE_CONTENT") + 1

        async def archived() -> bool:
            count = await pool.fetchval("SELECT count(*) FROM run_events WHERE run_id=$1", run_id)
            return bool(count >= 10)

        await poll(archived)
        await js.purge_stream(subjects.RUN_EVENTS_STREAM, subject=subjects.run_events(run_id))
        for how in ("header", "query"):
            resumed = reader()
            if how == "header":
                resumed.last_id = ids[cut]
                await resumed.read(c, f"/v1/agui/runs/{run_id}")
            else:
                await resumed.read(
                    c, f"/v1/agui/runs/{run_id}", params={"last_event_id": ids[cut]}, resume=False
                )
            got = [e.json for e in resumed.events]
            prelude = [e.json["type"] for e in resumed.events if e.id is None]
            assert prelude[:3] == ["RUN_STARTED", "STATE_SNAPSHOT", "MESSAGES_SNAPSHOT"], prelude
            assert prelude[-1] == "TEXT_MESSAGE_START"
            assert [e.id for e in resumed.events if e.id] == ids[cut + 1 :]
            clean(got)
        # An id that is not one of ours, another run's, one from the future: a clear 400.
        last = _cursor.decode(ids[-1].rsplit(".", 1)[0])
        other_run = _cursor.encode(last.epoch, "run_01JD6Q0W7XKZ3T9M4N5P6R8S2V", 1, 1)
        future = _cursor.encode(last.epoch, run_id, last.seq + 5, 0)
        for bad in ("nope", "c1abc.0", f"{other_run}.0", f"{future}.0"):
            resp = await c.get(f"/v1/agui/runs/{run_id}", headers={"Last-Event-ID": bad})
            assert resp.status_code == 400, (bad, resp.text)
        other = await c.get("/v1/agui/runs/run_01JD6Q0W7XKZ3T9M4N5P6R8S2V")
        assert other.status_code == 404
