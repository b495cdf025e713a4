"""Erasure and retention against the real servers and services.

`python -m runloom.admin tenant delete ID` after a crash mid-way: it resumes, then no table of
any service's schema, no stream and no bucket holds anything of the tenant (the test lists
every table, stream and bucket it searched); asked again it removes nothing; the other tenant's
runs, artifacts and new runs are untouched. `DELETE /v1/runs/{id}` erases one run of the
tenant's own (404 for another tenant's, 409 while it runs). Retention erases runs older than
the tenant's policy, keeping the month's spend in billing's aggregate.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
import time
import uuid
from typing import Any

import asyncpg
import httpx
import nats
import pytest
from runloom.contracts import subjects
from runloom.contracts.commands import DeadLetter
from runloom.contracts.types import now
from runloom.contracts.webhooks import WEBHOOK_EVENT_TYPES
from runloom.devkit.receiver import WebhookReceiver
from runloom.devkit.supervisor import SERVICES, wait_http
from runloom.devkit.testing import artifact_digests, wait_ended, wait_usage
from runloom.gateway.store.tenants import create_tenant
from runloom.runtime import bus, db, erasure

pytestmark = [
    pytest.mark.timeout(300),
    # Every service that holds a tenant's data answers its part of an erasure.
    pytest.mark.platform_services(*SERVICES),
]

SCHEMAS = db.SERVICES
DOCUMENT = {
    "title": "Erasure notes",
    "text": "A tenant that leaves takes every document, run, artifact and key with it. "
    "Nothing of it remains in any table, stream subject or object store bucket.",
}
ERASURE_QUESTION = "What does a tenant that leaves take with it: documents, runs, artifacts?"


def _admin(settings: Any, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "RUNLOOM_NATS_URL": settings.effective_nats_url,
        "RUNLOOM_NATS_CREDENTIALS": settings.nats_credentials,  # the admin identity's seed
        "RUNLOOM_DATABASE_URL": settings.effective_database_url,
        "RUNLOOM_LOG_LEVEL": "WARNING",
    }
    return subprocess.run(
        [sys.executable, "-m", "runloom.admin", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


async def _history(client: httpx.AsyncClient, run_id: str) -> list[Any]:
    r = await client.get(f"/v1/runs/{run_id}/events", params={"format": "json", "limit": "1000"})
    assert r.status_code == 200, r.text
    return [(i["cursor"], i["event"]) for i in r.json()["events"]]


async def _tenant_with_a_run(
    client: httpx.AsyncClient,
    question: str = "How do Python decorators work?",
    kind: str = "report",
) -> tuple[str, str]:
    """A document and a finished run with its report; (run id, document id)."""
    r = await client.post("/v1/documents", json=DOCUMENT)
    assert r.status_code == 201, r.text
    docs = (await client.get("/v1/documents")).json()["documents"]
    doc_id = next(d["id"] for d in docs if d["title"] == DOCUMENT["title"])
    r = await client.post(
        "/v1/runs",
        json={"question": question, "options": {"deliverables": [kind]}},
    )
    assert r.status_code == 201, r.text
    run_id = r.json()["id"]
    assert (await wait_ended(client, run_id, 120))["ended_by"] == "run.completed"
    return run_id, doc_id


async def _traces(pool: asyncpg.Pool, marks: list[str]) -> dict[str, int]:
    """Every base table of every service's schema: rows whose JSON form holds a mark."""
    tables = await pool.fetch(
        "SELECT table_schema, table_name FROM information_schema.tables"
        " WHERE table_schema = ANY($1::text[]) AND table_type = 'BASE TABLE'"
        " ORDER BY 1, 2",
        list(SCHEMAS),
    )
    found: dict[str, int] = {}
    for t in tables:
        name = f"{db.quote_ident(t['table_schema'])}.{db.quote_ident(t['table_name'])}"
        found[f"{t['table_schema']}.{t['table_name']}"] = await pool.fetchval(
            f"SELECT count(*) FROM {name} AS t WHERE row_to_json(t)::text LIKE ANY($1::text[])",
            [f"%{m}%" for m in marks],
        )
    return found


async def _stream_traces(js: Any, run_ids: list[str], marks: list[str]) -> dict[str, int]:
    """Every stream of the server: the runs' subjects (RUN_EVENTS), or every message read and
    matched (the others; the erasure records are checked apart)."""
    found: dict[str, int] = {}
    for info in await js.streams_info():
        name = info.config.name
        if name == subjects.RUN_EVENTS_STREAM:
            found[name] = sum(
                [await erasure.count_subject(js, subjects.run_events(r)) for r in run_ids]
            )
            continue
        if name == f"KV_{subjects.ERASURES_BUCKET}":
            continue
        hits = 0
        for seq in (
            range(info.state.first_seq, info.state.last_seq + 1) if info.state.messages else ()
        ):
            try:
                msg = await js.get_msg(name, seq)
            except nats.js.errors.NotFoundError:
                continue
            text = (msg.data or b"").decode("utf-8", "replace") + (msg.subject or "")
            hits += any(m in text for m in marks)
        found[name] = hits
    return found


@pytest.mark.platform_env(RUNLOOM_WEBHOOKS_ALLOW_LOCAL="true")
async def test_tenant_delete_resumes_after_a_crash_and_leaves_no_trace(
    platform: Any, corpus: str, pool: Any, nc: Any, js: Any
) -> None:
    settings = platform.settings
    other_key = await create_tenant(pool, f"t-{uuid.uuid4().hex[:10]}", "other")
    other_tenant = await pool.fetchval(
        "SELECT tenant_id FROM api_keys WHERE key_hash=encode(sha256($1::bytea), 'hex')",
        other_key.encode(),
    )
    from runloom.corpus.store import seed_default_corpus

    await seed_default_corpus(pool, other_tenant)
    headers = {"Authorization": f"Bearer {other_key}"}
    async with (
        WebhookReceiver() as receiver,
        httpx.AsyncClient(base_url=platform.url, headers=platform.headers(), timeout=30) as mine,
        httpx.AsyncClient(base_url=platform.url, headers=headers, timeout=30) as theirs,
    ):
        hooks = {}
        for name, client in (("mine", mine), ("theirs", theirs)):
            r = await client.post(
                "/v1/webhooks", json={"url": receiver.url, "events": list(WEBHOOK_EVENT_TYPES)}
            )
            assert r.status_code == 201, r.text
            hooks[name] = r.json()["id"]
        (run_a, doc_a), (run_b, _doc_b) = await asyncio.gather(
            _tenant_with_a_run(mine, ERASURE_QUESTION), _tenant_with_a_run(theirs, kind="slides")
        )
        arts_a = await artifact_digests(mine, run_a)
        assert arts_a
        b_history, b_arts = await _history(theirs, run_b), await artifact_digests(theirs, run_b)

        # A dead letter of each tenant's (as a consumer that could not read their message
        # leaves it: the original bytes quoted inside).
        letters = {}
        for tenant, run in ((corpus, run_a), (other_tenant, run_b)):
            original = json.dumps({"run_id": run, "tenant_id": tenant, "type": "x"})
            letter = DeadLetter(
                stream="RUN_EVENTS", subject=subjects.run_events(run), consumer="erasure-test",
                reason="a test's poison", payload=original, time=now(),
            )  # fmt: skip
            ack = await bus.publish(js, subjects.dead_letter("core", "erasure-test"), letter)
            letters[tenant] = ack.seq

        # A crash after the first two steps: the record says so, the rest was never done.
        crashed = await erasure.Erasure.open(nc, js, corpus)
        await crashed.save()
        for name, step in crashed.steps()[:2]:
            crashed.job.add(await step(crashed.job))
            crashed.job.done.append(name)
            await crashed.save()
        assert crashed.job.run_ids == [run_a]

        done = _admin(settings, "tenant", "delete", corpus)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "resumed after inventory, stream:RUN_EVENTS" in done.stdout, done.stdout
        print(done.stdout)
        again = _admin(settings, "tenant", "delete", corpus)
        assert again.returncode == 0, again.stderr
        removed_again = [
            int(line.split()[-1]) for line in again.stdout.splitlines()[1:] if line.strip()
        ]
        assert removed_again and not any(removed_again[1:]), again.stdout  # key revocation: 0

        marks = [corpus, run_a, doc_a]
        tables = await _traces(pool, marks)
        print("tables searched:", ", ".join(tables))
        assert len(tables) >= 20 and not any(tables.values()), tables
        streams = await _stream_traces(js, [run_a], marks)
        print("streams searched:", ", ".join(streams))
        assert {"RUN_EVENTS", "COMMANDS", "JOBS", "DEAD_LETTERS"} <= set(streams)
        assert not any(streams.values()), streams
        record = await erasure.load(js, erasure.erasure_id(corpus))
        assert record is not None and record.status == "done" and not record.run_ids
        store = await js.object_store(subjects.ARTIFACTS_BUCKET)
        names = {o.name for o in await store.list(ignore_deletes=True)}
        gone = {f"sha256-{digest}" for digest in arts_a.values()}
        # Equal bytes are one object: one that a remaining artifact names stays, the rest go.
        kept = {r["object_name"] for r in await pool.fetch("SELECT object_name FROM artifacts")}
        assert gone - kept, "the erased tenant's artifacts are its own bytes"
        assert not names & (gone - kept) and gone & kept <= names
        uploads = await js.object_store(subjects.CORPUS_UPLOADS_BUCKET)
        with contextlib.suppress(nats.js.errors.NotFoundError):
            assert doc_a not in {o.name for o in await uploads.list(ignore_deletes=True)}
        print("buckets searched: artifacts, corpus-uploads")
        assert re.search(r"^\s*stream:DEAD_LETTERS\s+1$", done.stdout, re.M), done.stdout
        with pytest.raises(nats.js.errors.NotFoundError):
            await js.get_msg(subjects.DLQ_STREAM, letters[corpus])
        assert (await js.get_msg(subjects.DLQ_STREAM, letters[other_tenant])).data

        # The erased tenant's key no longer opens anything; the other tenant is untouched.
        assert (await mine.get(f"/v1/runs/{run_a}")).status_code == 401
        assert await _history(theirs, run_b) == b_history
        listed = (await theirs.get("/v1/webhooks")).json()["webhooks"]
        assert [h["id"] for h in listed] == [hooks["theirs"]]
        assert await artifact_digests(theirs, run_b) == b_arts
        r = await theirs.post("/v1/runs", json={"question": "How do generators work?"})
        assert (await wait_ended(theirs, r.json()["id"], 120))["ended_by"] == "run.completed"


async def test_a_tenant_deletes_its_own_ended_run(
    platform: Any, corpus: str, pool: Any, js: Any
) -> None:
    other_key = await create_tenant(pool, f"t-{uuid.uuid4().hex[:10]}", "other")
    async with httpx.AsyncClient(
        base_url=platform.url, headers=platform.headers(), timeout=30
    ) as client:
        run_id, _doc = await _tenant_with_a_run(client)
        calls = sum(e["type"] == "usage.recorded" for _c, e in await _history(client, run_id))
        await wait_usage(client, run_id, calls)
        today = time.strftime("%Y-%m-%d", time.gmtime())
        usage = {"from": today, "to": today, "group_by": "model"}
        before = (await client.get("/v1/usage", params=usage)).json()
        other = {"Authorization": f"Bearer {other_key}"}
        r = await client.delete(f"/v1/runs/{run_id}", headers=other)
        assert r.status_code == 404, r.text

        # The gateway may not purge: with the lifecycle service away it says so and when to
        # retry, and nothing is removed.
        platform["lifecycle-1"].stop(timeout=10)
        r = await client.delete(f"/v1/runs/{run_id}")
        assert r.status_code == 503 and r.headers["Retry-After"], r.text
        assert "lifecycle" in r.json()["detail"], r.text
        assert await erasure.count_subject(js, subjects.run_events(run_id)) > 0
        assert (await client.get(f"/v1/runs/{run_id}")).status_code == 200
        platform["lifecycle-1"].start()
        wait_http(f"{platform.management['lifecycle-1']}/readyz", 30, platform["lifecycle-1"])

        r = await client.delete(f"/v1/runs/{run_id}")
        assert r.status_code == 200, r.text
        removed = r.json()["removed"]
        assert removed["stream:RUN_EVENTS"] > 0 and removed["gateway.run_events"] > 0
        assert removed["deliverables.artifacts"] > 0 and removed["billing.billing_ledger"] > 0
        assert (await client.get(f"/v1/runs/{run_id}")).status_code == 404
        assert (await client.get(f"/v1/runs/{run_id}/events")).status_code == 404
        assert (await client.delete(f"/v1/runs/{run_id}")).status_code == 404
        tables = await _traces(pool, [run_id])
        assert not any(tables.values()), tables
        assert await erasure.count_subject(js, subjects.run_events(run_id)) == 0
        # The run's usage stays in the tenant's reports, in aggregate.
        after = (await client.get("/v1/usage", params=usage)).json()
        assert after["groups"] == before["groups"] and before["groups"], (before, after)

        r = await client.post("/v1/runs", json={"question": "How do Python generators work?"})
        going = r.json()["id"]
        r = await client.delete(f"/v1/runs/{going}")
        assert r.status_code == 409 and "cancel it" in r.json()["detail"], r.text
        await wait_ended(client, going, 120)


@pytest.mark.platform_env(RUNLOOM_RETENTION_INTERVAL_S="0.5")
async def test_retention_erases_runs_older_than_the_policy(
    platform: Any, corpus: str, pool: Any, nc: Any, js: Any
) -> None:
    async with httpx.AsyncClient(
        base_url=platform.url, headers=platform.headers(), timeout=30
    ) as client:
        assert (await client.get("/v1/retention")).json()["keep_days"] is None
        old, _doc = await _tenant_with_a_run(client)
        r = await client.post("/v1/runs", json={"question": "How do Python generators work?"})
        recent = r.json()["id"]
        await wait_ended(client, recent, 120)
        spent = await pool.fetchval(
            "SELECT sum(spent_usd) FROM billing.billing_tenant_periods WHERE tenant_id=$1", corpus
        )
        done = _admin(platform.settings, "tenant", "retention", corpus, "30")
        assert done.returncode == 0, done.stderr
        body = (await client.get("/v1/retention")).json()
        assert body["keep_days"] == 30 and "30 days" in body["policy"]
        # The first run ended 31 days ago (as far as the read model knows).
        await pool.execute(
            "UPDATE gateway.runs SET ended_at = now() - interval '31 days' WHERE id=$1", old
        )
        deadline = time.monotonic() + 60
        while (await client.get(f"/v1/runs/{old}")).status_code != 404:
            assert time.monotonic() < deadline, "retention did not erase the old run in 60 s"
            await asyncio.sleep(0.25)
        assert (await client.get(f"/v1/runs/{recent}")).status_code == 200
        assert not any((await _traces(pool, [old])).values())
        assert (
            await pool.fetchval(
                "SELECT sum(spent_usd) FROM billing.billing_tenant_periods WHERE tenant_id=$1",
                corpus,
            )
            == spent
        )
        print("retention:", json.dumps(body))

        # An erasure whose runner died mid-way (its record untouched for ten minutes) is
        # finished by the next sweep.
        job = await erasure.Erasure.open(nc, js, corpus, run_ids=[recent])
        await job.save()
        name, step = job.steps()[0]
        job.job.add(await step(job.job))
        job.job.done.append(name)
        await job.save()
        stale = erasure.Job.from_json(job.job.to_json())
        stale.updated_at = "2000-01-01T00:00:00+00:00"
        await (await erasure.bucket(js)).put(stale.erasure_id, stale.to_json())
        while (await client.get(f"/v1/runs/{recent}")).status_code != 404:
            assert time.monotonic() < deadline + 60, "the sweep did not finish the erasure"
            await asyncio.sleep(0.25)
        record = await erasure.load(js, stale.erasure_id)
        assert record is not None and record.status == "done" and record.runs == 1
