"""The gateway's deliverables read model, projected from the run's deliverable.* events on the
real bus: listed and downloadable without the deliverables service, unchanged when the same
events are delivered again (even an older one after a newer)."""

from __future__ import annotations

import hashlib
from typing import Any

import httpx
import pytest
from runloom.contracts import subjects
from runloom.contracts.events import (
    ArtifactRef,
    DeliverableFailed,
    DeliverableProgress,
    DeliverableReady,
    DeliverableRequested,
)
from runloom.gateway.store.archive import archive_batch
from runloom.runtime.eventlog import EventLog

pytestmark = pytest.mark.platform_services("gateway")  # no deliverables replica running


async def _listing(c: httpx.AsyncClient, run_id: str, poll: Any, want: str) -> dict[str, Any]:
    body: dict[str, Any] = {}

    async def reached() -> bool:
        nonlocal body
        body = (await c.get(f"/v1/runs/{run_id}/deliverables")).json()
        return [d["status"] for d in body["deliverables"]] == [want, "failed"]

    await poll(reached, timeout=20)
    return body


async def test_listing_and_download_come_from_events_and_survive_redelivery(
    platform, js, pool, poll
) -> None:
    async with httpx.AsyncClient(base_url=platform.url, headers=platform.headers()) as c:
        run = (await c.post("/v1/runs", json={"question": "deliverables view"})).json()
        run_id = run["id"]
        tenant = await pool.fetchval("SELECT tenant_id FROM runs WHERE id=$1", run_id)
        log = EventLog(js, "deliverables")
        data = b"# A report\n\nRendered once.\n"
        sha = hashlib.sha256(data).hexdigest()
        bucket = await js.object_store(subjects.ARTIFACTS_BUCKET)
        await bucket.put(f"sha256-{sha}", data)
        ref = ArtifactRef(
            artifact_id="art_" + sha[:32],
            format="md",
            media_type="text/markdown; charset=utf-8",
            file_name="a-report.md",
            size=len(data),
            sha256=sha,
            object_name=f"sha256-{sha}",
        )
        events = [
            DeliverableRequested(kind="report", job_id="j-report", content_hash="h"),
            DeliverableRequested(kind="slides", job_id="j-slides", content_hash="h"),
            DeliverableProgress(
                kind="report", job_id="j-report", message="rendering", max_attempts=3
            ),
            DeliverableReady(kind="report", job_id="j-report", artifacts=[ref]),
            DeliverableFailed(
                kind="slides",
                job_id="j-slides",
                error="gave up after attempt 3: no slides",
                attempt=3,
                max_attempts=3,
                will_retry=False,
            ),
        ]
        for payload in events:
            await log.append(run_id, tenant, payload)
        first = await _listing(c, run_id, poll, "ready")
        report, slides = first["deliverables"]
        assert (report["kind"], report["attempts"], report["max_attempts"]) == ("report", 1, 3)
        assert [a["format"] for a in report["artifacts"]] == ["md"]
        assert (slides["attempts"], slides["artifacts"]) == (3, [])
        assert "gave up" in slides["error"] and slides["completed_at"]
        (item,) = first["items"]
        r = await c.get(item["url"])
        assert r.status_code == 200 and r.content == data
        assert 'filename="a-report.md"' in r.headers["content-disposition"]

        # The archive consumer gets the same events again, and an older one after the newer.
        again = [
            (se.event, se.raw, se.stream_seq)
            async for se in log.read(run_id)
            if se.event.type.startswith("deliverable.")
        ]
        await archive_batch(pool, again)
        await archive_batch(pool, [again[2], again[0]])  # progress, requested: both older
        assert (await c.get(f"/v1/runs/{run_id}/deliverables")).json() == first
        assert (
            await pool.fetchval("SELECT count(*) FROM run_artifacts WHERE run_id=$1", run_id) == 1
        )
