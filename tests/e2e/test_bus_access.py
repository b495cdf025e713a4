"""Zero trust on the bus, tried as an attacker holding one workload's credential would.

The session's nats-server runs with the generated authorization (every identity an nkey user,
no anonymous user). Each test connects as an identity (or as nobody), tries what lies outside
its row of the table and checks that the server refused it, that no stream changed, and that
runs still complete.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import httpx
import nats
import nats.errors
import nkeys
import pytest
from runloom.contracts import subjects
from runloom.contracts.ids import new_id
from runloom.devkit import busauth
from runloom.devkit.testing import wait_ended
from runloom.runtime import access

SERVICES = ("gateway", "orchestrator", "deliverables", "billing", "webhooks", "lifecycle")
CONFINED = (*SERVICES, "backup")
"""Every identity but admin: the services, and the backup (stream snapshots only)."""
STREAMS = (
    *access.STREAMS,
    *(access.bucket_stream(b) for b in access.BUCKETS),
    *(access.kv_stream(b) for b in access.KV),
)

# What no service may do, whatever its identity: the stream admin API (streams and object
# stores alike), other consumers' durables, every subject, every inbox.
FORBIDDEN_TO_ALL = (
    "$JS.API.STREAM.CREATE.EVIL",
    f"$JS.API.STREAM.UPDATE.{subjects.RUN_EVENTS_STREAM}",
    f"$JS.API.STREAM.DELETE.{subjects.RUN_EVENTS_STREAM}",
    f"$JS.API.STREAM.PURGE.{subjects.COMMANDS_STREAM}",
    f"$JS.API.STREAM.PURGE.{subjects.JOBS_STREAM}",
    f"$JS.API.STREAM.DELETE.OBJ_{subjects.ARTIFACTS_BUCKET}",
    f"$JS.API.STREAM.MSG.DELETE.{subjects.RUN_EVENTS_STREAM}",
    f"$JS.API.STREAM.DELETE.KV_{subjects.ERASURES_BUCKET}",
    "$JS.API.STREAM.LIST",
    f"$JS.API.CONSUMER.DELETE.{subjects.RUN_EVENTS_STREAM}.run-archive",
    f"$JS.API.CONSUMER.DELETE.{subjects.COMMANDS_STREAM}.orchestrator",
    "$JS.API.ACCOUNT.PURGE.x",
    f"{subjects.DLQ_STREAM}.forged",
)

# Per identity: requests, jobs and commands that are another service's to send, and other
# durables' messages (taking them would steal another service's work).
FORBIDDEN = {
    "gateway": (
        # Erasure is the lifecycle service's: the internet-facing gateway may only ask for it.
        f"$JS.API.STREAM.PURGE.{subjects.RUN_EVENTS_STREAM}",
        f"$JS.API.STREAM.MSG.DELETE.{subjects.COMMANDS_STREAM}",
        f"$JS.API.STREAM.MSG.DELETE.{subjects.DLQ_STREAM}",
        f"$KV.{subjects.ERASURES_BUCKET}.forged",
        subjects.erase("orchestrator"),
        subjects.erase("billing"),
        f"$JS.API.STREAM.PURGE.OBJ_{subjects.ARTIFACTS_BUCKET}",
        subjects.BILLING_RESERVE,
        subjects.BILLING_COMMIT,
        subjects.deliverable_job("report"),
        "$JS.API.CONSUMER.MSG.NEXT.COMMANDS.orchestrator",
        "$JS.API.CONSUMER.MSG.NEXT.RUN_EVENTS.billing-ledger",
    ),
    "orchestrator": (
        f"$JS.API.STREAM.PURGE.{subjects.RUN_EVENTS_STREAM}",
        f"$JS.API.STREAM.PURGE.OBJ_{subjects.ARTIFACTS_BUCKET}",
        f"$JS.API.STREAM.MSG.DELETE.{subjects.COMMANDS_STREAM}",
        f"$KV.{subjects.ERASURES_BUCKET}.forged",
        subjects.erase("billing"),
        subjects.START_RUN,
        subjects.BILLING_BUDGET_SET,
        subjects.DELIVERABLES_ARTIFACT,
        "$JS.API.CONSUMER.MSG.NEXT.JOBS.deliverables",
        f"$O.{subjects.ARTIFACTS_BUCKET}.M.forged",
    ),
    "deliverables": (
        f"$JS.API.STREAM.PURGE.{subjects.RUN_EVENTS_STREAM}",
        f"$JS.API.STREAM.MSG.DELETE.{subjects.JOBS_STREAM}",
        subjects.erase("gateway"),
        subjects.WEBHOOKS_CREATE,
        subjects.START_RUN,
        subjects.RESUME_RUN,
        subjects.BILLING_RESERVE,
        subjects.CORPUS_DELETE,
        subjects.deliverable_job("slides"),
        "$JS.API.CONSUMER.MSG.NEXT.COMMANDS.orchestrator",
        f"$JS.API.STREAM.PURGE.OBJ_{subjects.CORPUS_UPLOADS_BUCKET}",
    ),
    "billing": (
        f"$JS.API.STREAM.PURGE.{subjects.RUN_EVENTS_STREAM}",
        f"$JS.API.STREAM.PURGE.OBJ_{subjects.ARTIFACTS_BUCKET}",
        f"$KV.{subjects.ERASURES_BUCKET}.forged",
        subjects.START_RUN,
        subjects.CORPUS_ADD,
        subjects.DELIVERABLES_RUN,
        subjects.deliverable_job("website"),
        "$JS.API.STREAM.NAMES",
        "$JS.API.CONSUMER.MSG.NEXT.RUN_EVENTS.run-archive",
        f"$O.{subjects.CORPUS_UPLOADS_BUCKET}.C.forged",
    ),
    "backup": (
        f"$JS.API.STREAM.PURGE.{subjects.RUN_EVENTS_STREAM}",
        f"$JS.API.STREAM.RESTORE.{subjects.RUN_EVENTS_STREAM}",
        f"$JS.API.STREAM.MSG.DELETE.{subjects.DLQ_STREAM}",
        f"$JS.API.DIRECT.GET.{subjects.RUN_EVENTS_STREAM}",
        f"$JS.API.CONSUMER.CREATE.{subjects.RUN_EVENTS_STREAM}",
        "$JS.API.CONSUMER.MSG.NEXT.RUN_EVENTS.run-archive",
        subjects.run_events(new_id("run")),
        subjects.START_RUN,
        subjects.BILLING_RESERVE,
        subjects.erase("gateway"),
        f"$KV.{subjects.ERASURES_BUCKET}.forged",
        f"$O.{subjects.ARTIFACTS_BUCKET}.M.forged",
    ),
    "webhooks": (
        f"$JS.API.STREAM.PURGE.{subjects.RUN_EVENTS_STREAM}",
        f"$JS.API.STREAM.PURGE.OBJ_{subjects.ARTIFACTS_BUCKET}",
        f"$JS.API.STREAM.MSG.DELETE.{subjects.DLQ_STREAM}",
        subjects.START_RUN,
        subjects.BILLING_RESERVE,
        subjects.CORPUS_ADD,
        subjects.erase("orchestrator"),
        subjects.deliverable_job("report"),
        "$JS.API.CONSUMER.MSG.NEXT.RUN_EVENTS.run-archive",
        f"$O.{subjects.ARTIFACTS_BUCKET}.M.forged",
    ),
}

FORBIDDEN["lifecycle"] = (
    # It purges run subjects and deletes scanned messages; nothing else of the streams.
    f"$JS.API.STREAM.PURGE.{subjects.DLQ_STREAM}",
    f"$JS.API.STREAM.PURGE.OBJ_{subjects.ARTIFACTS_BUCKET}",
    f"$JS.API.STREAM.PURGE.OBJ_{subjects.CORPUS_UPLOADS_BUCKET}",
    f"$JS.API.DIRECT.GET.{subjects.RUN_EVENTS_STREAM}",
    f"$JS.API.STREAM.MSG.GET.{subjects.RUN_EVENTS_STREAM}",
    f"$JS.API.CONSUMER.CREATE.{subjects.RUN_EVENTS_STREAM}",
    "$JS.API.CONSUMER.MSG.NEXT.RUN_EVENTS.run-archive",
    "$JS.API.CONSUMER.MSG.NEXT.COMMANDS.orchestrator",
    subjects.run_events(new_id("run")),
    subjects.START_RUN,
    subjects.RESUME_RUN,
    subjects.BILLING_RESERVE,
    subjects.CORPUS_ADD,
    subjects.WEBHOOKS_CREATE,
    subjects.deliverable_job("report"),
    f"$O.{subjects.ARTIFACTS_BUCKET}.M.forged",
)

NOT_TO_READ = {
    "gateway": (
        ">",
        "_INBOX_billing.>",
        "_INBOX_lifecycle.>",
        subjects.BILLING_RESERVE,
        subjects.RUN_EVENTS_SUBJECTS,
        subjects.LIFECYCLE_ERASE,
    ),
    "orchestrator": ("_INBOX_gateway.>", subjects.DELIVERABLES_RUN, "cmd.>", "$JS.>"),
    "deliverables": (">", "_INBOX_orchestrator.>", subjects.RUN_EVENTS_SUBJECTS, "job.>"),
    "billing": ("_INBOX.>", "_INBOX_gateway.>", subjects.CORPUS_ADD, subjects.START_RUN),
    "webhooks": (">", "_INBOX_billing.>", subjects.RUN_EVENTS_SUBJECTS, subjects.ERASE_GATEWAY),
    "backup": (">", "_INBOX_admin.>", subjects.RUN_EVENTS_SUBJECTS, subjects.START_RUN),
    "lifecycle": (
        ">",
        "_INBOX_gateway.>",
        subjects.RUN_EVENTS_SUBJECTS,
        subjects.ERASE_GATEWAY,
        subjects.RETENTION_DUE,
    ),
}


class Refusals:
    """The errors the server sent one client (permissions violations arrive asynchronously)."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    async def cb(self, exc: Exception) -> None:
        self.errors.append(str(exc).lower())

    async def wait_for(self, fragment: str, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not any(fragment.lower() in e for e in self.errors):
            assert time.monotonic() < deadline, f"no refusal of {fragment!r}: {self.errors}"
            await asyncio.sleep(0.02)


async def _snapshot(js: Any) -> dict[str, Any]:
    """Each stream's messages and its durable consumers (ephemeral ones left by earlier tests
    come and go on their own)."""
    out: dict[str, Any] = {}
    for name in STREAMS:
        s = (await js.stream_info(name)).state
        durables = sorted(c.name for c in await js.consumers_info(name) if c.config.durable_name)
        out[name] = (s.messages, s.first_seq, s.last_seq, durables)
    return out


async def _as(nats_as: Any, identity: str) -> tuple[Any, Refusals]:
    refusals = Refusals()
    nc = await nats_as(identity, error_cb=refusals.cb)
    return nc, refusals


async def test_nobody_is_let_in_without_a_known_nkey(settings: Any, nats_as: Any, tmp_path) -> None:
    async def refused(**kwargs: Any) -> str:
        with pytest.raises(Exception) as caught:
            async with asyncio.timeout(10):
                await nats.connect(
                    settings.effective_nats_url,
                    allow_reconnect=False,
                    max_reconnect_attempts=0,
                    connect_timeout=2,
                    **kwargs,
                )
        return str(caught.value).lower()

    assert "authorization" in await refused()  # anonymous
    stranger = tmp_path / "stranger.nk"
    stranger.write_bytes(nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER))
    stranger.chmod(0o600)
    assert "authorization" in await refused(nkeys_seed=str(stranger))
    assert "authorization" in await refused(user="admin", password="admin")


@pytest.mark.parametrize("identity", CONFINED)
async def test_every_attempt_outside_the_table_is_refused_and_no_stream_changes(
    js: Any, nats_as: Any, identity: str
) -> None:
    before = await _snapshot(js)
    nc, refusals = await _as(nats_as, identity)
    for subject in (*FORBIDDEN_TO_ALL, *FORBIDDEN[identity]):
        await nc.publish(subject, b"{}", reply=f"{access.inbox_prefix(identity)}.x")
        await nc.flush()
        await refusals.wait_for(f'publish to "{subject}"')
    for subject in NOT_TO_READ[identity]:
        await nc.subscribe(subject)
        await refusals.wait_for(f'subscription to "{subject}"')
    # nats-py's own stream administration, as a service would call it: no answer comes.
    sjs = nc.jetstream(timeout=1.0)
    for attempt in (
        sjs.purge_stream(subjects.JOBS_STREAM),
        sjs.delete_stream(subjects.COMMANDS_STREAM),
        sjs.add_stream(name="EVIL", subjects=["evil.>"]),
        sjs.delete_object_store(subjects.ARTIFACTS_BUCKET),
    ):
        with pytest.raises((nats.errors.TimeoutError, nats.errors.Error, TimeoutError)):
            await attempt
    assert await _snapshot(js) == before
    assert nc.is_connected, "a refused attempt must not cost the service its connection"


async def test_a_reply_reaches_only_the_asker(nats_as: Any) -> None:
    """A service's own subjects work for it (the positive half), and its reply inbox is its
    own: another identity may answer a request it received, and write there nothing else."""
    gateway, g_refusals = await _as(nats_as, "gateway")
    billing, b_refusals = await _as(nats_as, "billing")
    # Billing answers its subjects in its queue group; the gateway asks and is answered.
    sub = await billing.subscribe(subjects.BILLING_BUDGET_GET, queue="billing")
    await billing.flush()  # the subscription is on the server before the request goes out

    async def answer() -> None:
        msg = await sub.next_msg(timeout=5)
        await msg.respond(b"pong")

    task = asyncio.create_task(answer())
    reply = await gateway.request(subjects.BILLING_BUDGET_GET, b"ping", timeout=5)
    await task
    assert reply.data == b"pong"
    assert reply.subject.startswith(access.inbox_prefix("gateway") + ".")
    # Billing may answer a request it received, but may not publish to the gateway's inbox
    # unasked.
    await billing.publish(f"{access.inbox_prefix('gateway')}.forged", b"x")
    await billing.flush()
    await b_refusals.wait_for(f'publish to "{access.inbox_prefix("gateway")}.forged"')
    assert not g_refusals.errors


async def test_runs_complete_with_every_service_on_its_own_identity(
    platform: Any, corpus: str, servers: Any
) -> None:
    """The whole platform, each process holding only its own credential: a run ends, its
    report and artifacts are served, and the server refused nothing any service asked."""
    async with httpx.AsyncClient(
        base_url=platform.url, headers=platform.headers(), timeout=15
    ) as c:
        r = await c.post(
            "/v1/runs", json={"question": "How do Python generators and exceptions work?"}
        )
        assert r.status_code == 201, r.text
        run = await wait_ended(c, r.json()["id"], 90)
        assert run["ended_by"] == "run.completed", (run["error"], run["missing"])
        listing = (await c.get(f"/v1/runs/{run['id']}/deliverables")).json()
        for d in listing["deliverables"]:
            assert d["status"] == "ready", d
    for name, proc in platform.procs.items():
        tail = proc.log_tail(200_000).lower()
        assert "permissions violation" not in tail, f"{name} was refused something: {tail}"
    for name in SERVICES:
        path = busauth.credential(platform.settings.home, name)
        assert path.stat().st_mode & 0o777 == 0o600
        assert path.read_text().strip() not in "".join(
            p.log_tail(200_000) for p in platform.procs.values()
        )
    for proc in platform.procs.values():
        own = str(busauth.credential(platform.settings.home, proc.service))
        assert proc.env.get("RUNLOOM_NATS_CREDENTIALS") == own


async def test_only_the_lifecycle_identity_may_purge_a_run_history(js: Any, nats_as: Any) -> None:
    """The purge an erasure makes (`run.<id>.events`, filtered), tried by the internet-facing
    gateway: refused, the history intact. The lifecycle service's identity may."""
    from runloom.runtime.erasure import count_subject

    subject = subjects.run_events(new_id("run"))
    await js.publish(subject, b'{"note": "a history to keep"}')
    gateway, refusals = await _as(nats_as, "gateway")
    with pytest.raises((nats.errors.TimeoutError, nats.errors.Error, TimeoutError)):
        await gateway.jetstream(timeout=1.0).purge_stream(
            subjects.RUN_EVENTS_STREAM, subject=subject
        )
    await refusals.wait_for(f'publish to "$JS.API.STREAM.PURGE.{subjects.RUN_EVENTS_STREAM}"')
    assert await count_subject(js, subject) == 1
    lifecycle, l_refusals = await _as(nats_as, "lifecycle")
    assert await lifecycle.jetstream().purge_stream(subjects.RUN_EVENTS_STREAM, subject=subject)
    assert await count_subject(js, subject) == 0
    assert not l_refusals.errors
