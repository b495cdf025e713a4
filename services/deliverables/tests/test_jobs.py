"""The deliverables service as real processes on the real bus and database: jobs render once,
survive a SIGKILL, retry and fail visibly, and the gateway serves only the owner's artifacts."""

from __future__ import annotations

import hashlib
from typing import Any

import httpx
import msgspec
import pytest
from runloom.contracts import subjects
from runloom.contracts.commands import DeadLetter
from runloom.contracts.events import RunCancelled
from runloom.deliverables.render import KINDS
from runloom.deliverables.sample import sample_content
from runloom.devkit.deliverables import eventually
from runloom.gateway.store.tenants import create_tenant
from runloom.runtime import bus

pytestmark = pytest.mark.platform_services("gateway", "deliverables")

ALL_KINDS = ("report", "website", "slides")


async def _jobs_idle(js: Any) -> bool:
    info = await js.consumer_info(subjects.JOBS_STREAM, "deliverables")
    return info.num_pending == 0 and info.num_ack_pending == 0


async def _get(platform: Any, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        h = platform.headers() if headers is None else headers
        return await client.get(platform.url + path, headers=h)


async def test_every_kind_renders_once_and_downloads_with_type_and_name(
    platform, pool, new_run
) -> None:
    run = await new_run(platform.tenant_id, sample_content(sections=3))
    for kind in ALL_KINDS:
        await run.request(kind)

    async def all_ready() -> list[Any] | None:
        ready = await run.events("deliverable.ready")
        return ready if len(ready) == 3 else None

    ready = await eventually(all_ready, 40, "three deliverable.ready events")
    assert sorted(e.data["kind"] for e in ready) == sorted(ALL_KINDS)
    progress = await run.events("deliverable.progress")
    assert {e.data["kind"] for e in progress} == set(ALL_KINDS)

    listing = await _get(platform, f"/v1/runs/{run.run_id}/deliverables")
    assert listing.status_code == 200, listing.text
    body = listing.json()
    by_kind = {d["kind"]: d for d in body["deliverables"]}
    assert set(by_kind) == set(ALL_KINDS)
    for kind, formats in KINDS.items():
        d = by_kind[kind]
        assert d["status"] == "ready" and d["attempts"] == 1
        assert [a["format"] for a in d["artifacts"]] == [f.name for f in formats]
    assert len(body["items"]) == 7

    for item in body["items"]:
        r = await _get(platform, item["url"])
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith(item["media_type"].split(";")[0])
        assert f'filename="{item["file_name"]}"' in r.headers["content-disposition"]
        assert len(r.content) == item["size"]
        assert hashlib.sha256(r.content).hexdigest() == item["sha256"]
    pdf = next(i for i in body["items"] if i["format"] == "pdf")
    assert pdf["file_name"].endswith(".pdf")
    assert (await _get(platform, pdf["url"])).content.startswith(b"%PDF-")


async def test_another_tenants_run_and_artifacts_answer_404(platform, pool, new_run) -> None:
    run = await new_run(platform.tenant_id, sample_content(sections=2))
    await run.request("website")
    await eventually(lambda: run.events("deliverable.ready"), 30, "website ready")
    mine = (await _get(platform, f"/v1/runs/{run.run_id}/deliverables")).json()
    art = mine["items"][0]
    assert (await _get(platform, art["url"])).status_code == 200

    other_key = await create_tenant(pool, "t-other-" + run.run_id[-8:].lower(), "other")
    other = {"Authorization": f"Bearer {other_key}"}
    for path in (f"/v1/runs/{run.run_id}/deliverables", art["url"]):
        r = await _get(platform, path, headers=other)
        assert r.status_code == 404, (path, r.status_code, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
        assert run.run_id not in r.text or "No run" in r.json()["detail"]
    missing = await _get(platform, "/v1/artifacts/art_" + "0" * 32)
    assert missing.status_code == 404
    assert (await _get(platform, art["url"], headers={})).status_code == 401


@pytest.mark.platform_env(
    RUNLOOM_DELIVERABLES_RENDER_DELAY_S="0.4", RUNLOOM_DELIVERABLES_CONCURRENCY="1"
)
async def test_same_job_twice_to_two_replicas_yields_one_artifact_per_format(
    platform, pool, js, new_run
) -> None:
    platform.add("deliverables")  # a second replica on the same durable consumer
    run = await new_run(platform.tenant_id, sample_content(sections=2))
    job = await run.request("report")
    # The same job again under another message id (a re-request after the dedup window),
    # so both copies are in flight at once, one per replica.
    await run.request("report", msg_id=job.job_id + ":again")

    await eventually(lambda: run.events("deliverable.ready"), 40, "report ready")
    await eventually(lambda: _jobs_idle(js), 30, "both copies acked")

    assert len(await run.events("deliverable.ready")) == 1
    rows = await pool.fetch("SELECT format, object_name FROM artifacts WHERE job_id=$1", job.job_id)
    assert sorted(r["format"] for r in rows) == ["docx", "html", "md", "pdf"]
    job_row = await pool.fetchrow("SELECT * FROM deliverable_jobs WHERE job_id=$1", job.job_id)
    assert job_row["status"] == "ready" and job_row["attempts"] == 1
    # The work itself was done once: across both replicas, each format was rendered once.
    logs = "".join(
        proc.log_tail(10**7) for name, proc in platform.procs.items() if "deliverables" in name
    )
    for fmt in ("md", "html", "pdf", "docx"):
        assert logs.count(f"rendered report {fmt}:") == 1, fmt
    assert logs.count("already ready; acking the copy") == 1
    rendered = [
        e
        for e in await run.events("deliverable.progress")
        if e.data["message"].startswith("rendered ")
    ]
    assert sorted(e.data["message"].split()[1] for e in rendered) == ["docx", "html", "md", "pdf"]


@pytest.mark.platform_env(RUNLOOM_DELIVERABLES_RENDER_DELAY_S="1.0")
async def test_sigkill_mid_job_completes_once_after_restart(platform, pool, js, new_run) -> None:
    run = await new_run(platform.tenant_id, sample_content())
    job = await run.request("report")

    async def first_format_rendered() -> bool:
        return any(e.data.get("fraction", 0) > 0 for e in await run.events("deliverable.progress"))

    await eventually(first_format_rendered, 30, "the first format rendered")
    platform["deliverables-1"].kill()
    assert not await run.events("deliverable.ready")  # killed mid-job
    platform["deliverables-1"].start()

    ready = await eventually(lambda: run.events("deliverable.ready"), 45, "ready after restart")
    await eventually(lambda: _jobs_idle(js), 15, "job acked")
    assert len(await run.events("deliverable.ready")) == 1
    assert ready[0].data["attempt"] == 2
    assert [a["format"] for a in ready[0].data["artifacts"]] == ["md", "html", "pdf", "docx"]
    rows = await pool.fetch("SELECT format FROM artifacts WHERE job_id=$1", job.job_id)
    assert len(rows) == 4
    # What the killed attempt finished is not rendered again.
    attempt2 = [
        e.data["message"].split()[1]
        for e in await run.events("deliverable.progress")
        if e.data.get("attempt", 1) == 2 and e.data["message"].startswith("rendered ")
    ]
    attempt1 = [
        e.data["message"].split()[1]
        for e in await run.events("deliverable.progress")
        if e.data.get("attempt", 1) == 1 and e.data["message"].startswith("rendered ")
    ]
    assert attempt1 and not set(attempt1) & set(attempt2)
    assert sorted(attempt1 + attempt2) == ["docx", "html", "md", "pdf"]


@pytest.mark.platform_env(
    RUNLOOM_DELIVERABLES_MAX_ATTEMPTS="3", RUNLOOM_DELIVERABLES_RETRY_BASE_S="0.3"
)
async def test_unrenderable_model_fails_with_retries_then_for_good_others_deliver(
    platform, pool, new_run
) -> None:
    content = sample_content(sections=2)
    claim = content.sections[1].claims[0]
    # Text pasted from a terminal: ANSI colour codes. XML (DOCX) and the PDF font cannot hold
    # ESC; the website and the slides (PPTX escapes it, HTML shows it) can.
    bad = msgspec.structs.replace(claim, text="Build output: \x1b[31mFAILED\x1b[0m twice")
    sections = [
        content.sections[0],
        msgspec.structs.replace(content.sections[1], claims=[bad, *content.sections[1].claims[1:]]),
    ]
    run = await new_run(platform.tenant_id, msgspec.structs.replace(content, sections=sections))
    for kind in ALL_KINDS:
        await run.request(kind)

    async def final_failure() -> list[Any] | None:
        failed = await run.events("deliverable.failed")
        return failed if any(not e.data["will_retry"] for e in failed) else None

    failed = await eventually(final_failure, 40, "a final deliverable.failed")
    assert [(e.data["attempt"], e.data["will_retry"]) for e in failed] == [
        (1, True),
        (2, True),
        (3, False),
    ]
    assert all(e.data["kind"] == "report" and e.data["max_attempts"] == 3 for e in failed)
    assert all(e.data["retry_at"] for e in failed[:2]) and "retry_at" not in failed[2].data
    assert "U+001B" in failed[2].data["error"] and "gave up" in failed[2].data["error"]
    ready = await eventually(
        lambda: _n_ready(run, 2), 30, "website and slides ready despite the report failing"
    )
    assert sorted(e.data["kind"] for e in ready) == ["slides", "website"]

    body = (await _get(platform, f"/v1/runs/{run.run_id}/deliverables")).json()
    by_kind = {d["kind"]: d for d in body["deliverables"]}
    assert by_kind["report"]["status"] == "failed"
    assert by_kind["report"]["attempts"] == 3 and "U+001B" in by_kind["report"]["error"]
    assert by_kind["report"]["artifacts"] == []
    assert {i["kind"] for i in body["items"]} == {"website", "slides"}
    for item in body["items"]:
        assert (await _get(platform, item["url"])).status_code == 200


async def _n_ready(run: Any, n: int) -> list[Any] | None:
    ready = await run.events("deliverable.ready")
    return ready if len(ready) >= n else None


async def test_malformed_job_is_dead_lettered_and_an_unknown_format_fails_at_once(
    platform, pool, js, new_run
) -> None:
    await js.publish(subjects.deliverable_job("report"), b'{"job_id": 7}')
    dlq = subjects.dead_letter(subjects.JOBS_STREAM, "deliverables")

    async def letter() -> DeadLetter | None:
        try:
            msg = await js.get_last_msg(subjects.DLQ_STREAM, dlq)
        except Exception:
            return None
        d = msgspec.json.decode(msg.data, type=DeadLetter)
        return d if d.payload == '{"job_id": 7}' else None

    d = await eventually(letter, 20, "a dead letter")
    assert "Expected `str`" in d.reason and "job_id" in d.reason


@pytest.mark.platform_services("gateway")
async def test_a_requested_kind_not_picked_up_yet_is_listed_as_queued(
    platform, pool, new_run
) -> None:
    run = await new_run(platform.tenant_id, sample_content(sections=1))
    job = await run.request("slides")  # no deliverables replica is running

    async def listed() -> list[Any] | None:
        body = (await _get(platform, f"/v1/runs/{run.run_id}/deliverables")).json()
        return body.get("deliverables")

    (d,) = await eventually(listed, 20, "the requested kind to be listed")
    assert (d["kind"], d["job_id"], d["status"], d["artifacts"]) == (
        "slides",
        job.job_id,
        "queued",
        [],
    )


async def test_a_job_for_a_run_that_already_ended_still_stores_its_artifacts(
    platform, pool, js, new_run
) -> None:
    run = await new_run(platform.tenant_id, sample_content(sections=1))
    job = run.job("website")
    await run.log.append(run.run_id, run.tenant_id, RunCancelled(reason="user"))
    await bus.publish(js, subjects.deliverable_job("website"), job, msg_id=job.job_id)

    async def stored() -> Any:
        return await pool.fetchval(
            "SELECT status FROM deliverable_jobs WHERE job_id=$1 AND status='ready'", job.job_id
        )

    await eventually(stored, 30, "the job to finish")
    await eventually(lambda: _jobs_idle(js), 15, "job acked")
    types = [e.type for e in await run.events()]
    assert types[-1] == "run.cancelled" and not any(t.startswith("deliverable.") for t in types)
    body = (await _get(platform, f"/v1/runs/{run.run_id}/deliverables")).json()
    (item,) = body["items"]
    assert item["format"] == "zip"
    assert (await _get(platform, item["url"])).status_code == 200

    # Well-formed, but asking for a format the kind does not have: no retry can help.
    run = await new_run(platform.tenant_id, sample_content(sections=1))
    job = run.job("report", formats=["pdf", "odt"])
    await bus.publish(js, subjects.deliverable_job("report"), job, msg_id=job.job_id)
    (failed,) = await eventually(lambda: run.events("deliverable.failed"), 20, "a failure")
    assert (failed.data["attempt"], failed.data["will_retry"]) == (1, False)
    assert "'odt'" in failed.data["error"] and "known: md, html, pdf, docx" in failed.data["error"]
