"""No message stalls a consumer: poison on every stream is set apart, the rest goes on.

On each stream (run events, commands, jobs) a message that cannot be decoded and one that
cannot be stored (NUL in text, which PostgreSQL refuses) are injected past the gateway's
validation. Every consumer's lag returns to zero, each poison message is in the dead-letter
stream with its reason, the runs they belong to end with `run.failed` naming the cause (in
their events and in the runs list), and a run started afterwards completes as usual.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import msgspec
from runloom.contracts import subjects
from runloom.contracts.commands import DeadLetter, DeliverableJob, StartRun
from runloom.contracts.events import Event, RunCreated, Usage, UsageRecorded, data_of
from runloom.contracts.headers import Header
from runloom.contracts.ids import new_id, ulid
from runloom.contracts.types import now
from runloom.devkit.testing import wait_ended
from runloom.runtime import bus
from runloom.runtime.eventlog import EventLog

CONSUMERS = [
    (subjects.RUN_EVENTS_STREAM, "run-archive"),
    (subjects.RUN_EVENTS_STREAM, "billing-ledger"),
    (subjects.COMMANDS_STREAM, "orchestrator"),
    (subjects.JOBS_STREAM, "deliverables"),
]


async def _lag(js: Any) -> dict[str, int]:
    out = {}
    for stream, durable in CONSUMERS:
        try:
            info = await js.consumer_info(stream, durable)
        except Exception:
            out[durable] = -1
            continue
        out[durable] = int(info.num_pending or 0) + int(info.num_ack_pending or 0)
    return out


async def _eventually(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await _tick()
    raise AssertionError(f"timed out waiting for {what}: {last!r}")


async def _tick() -> None:
    import asyncio

    await asyncio.sleep(0.2)


async def _letters(js: Any) -> list[DeadLetter]:
    sub = await js.subscribe(subjects.DLQ_SUBJECTS, deliver_policy="all", ordered_consumer=True)
    out = []
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=0.5)
            except Exception:
                break
            out.append(msgspec.json.decode(msg.data, type=DeadLetter))
    finally:
        await sub.unsubscribe()
    return out


async def test_poison_on_every_stream_is_set_apart_and_the_rest_goes_on(
    platform, js, platform_tenant, corpus
) -> None:
    tenant = platform_tenant
    log = EventLog(js, "test/poison")
    # Runs that are alive (created, not started): each gets one poison message.
    victims = {}
    for name in ("ledger", "command", "job"):
        run_id = new_id("run")
        await log.append(run_id, tenant, RunCreated(question=f"victim of {name} poison?"))
        victims[name] = run_id

    marker = new_id("poison")
    # Run events: undecodable, and a usage event the ledger cannot store (NUL in text),
    # written as raw bytes the way a writer that skips the event log's checks would.
    await js.publish(subjects.run_events(new_id("run")), f"{marker} not json".encode())
    usage = Event(
        id=ulid(),
        run_id=victims["ledger"],
        tenant_id=tenant,
        seq=2,
        type="usage.recorded",
        time=now(),
        producer="test/poison",
        data=data_of(
            UsageRecorded(
                usage_id=f"{marker}-usage",
                kind="provider",
                provider="offline",
                model="bad\x00model",
                usage=Usage(input_tokens=1, output_tokens=1),
            )
        ),
    )
    await js.publish(
        subjects.run_events(victims["ledger"]),
        msgspec.json.encode(usage),
        headers={Header.EVENT_TYPE: usage.type, "Nats-Msg-Id": usage.id},
    )
    # Commands: undecodable, and a start for a live run whose tenant id holds a NUL (its
    # events cannot be stored).
    await js.publish(subjects.START_RUN, f'{{"{marker}": 1'.encode())
    await bus.publish(
        js,
        subjects.START_RUN,
        StartRun(
            command_id=f"{marker}-start", run_id=victims["command"], tenant_id=f"{tenant}\x00"
        ),
    )
    # Jobs: undecodable, and a job of a live run whose id PostgreSQL cannot hold.
    await js.publish(subjects.deliverable_job("report"), f"\xff{marker}".encode("latin-1"))
    await bus.publish(
        js,
        subjects.deliverable_job("report"),
        DeliverableJob(
            job_id=f"{marker}\x00job",
            run_id=victims["job"],
            tenant_id=tenant,
            kind="report",
            content_hash="0" * 64,
        ),
    )
    injected = time.monotonic()

    # A run started after the poison goes through every consumer as usual.
    async with httpx.AsyncClient(
        base_url=platform.url, headers=platform.headers(), timeout=30
    ) as client:
        resp = await client.post(
            "/v1/runs",
            json={"question": "How do Python decorators work?", "options": {"deliverables": []}},
        )
        assert resp.status_code == 201, resp.text
        healthy = resp.json()["id"]
        ended = await wait_ended(client, healthy)
        assert ended["status"] == "completed", ended

        async def drained() -> dict[str, int] | None:
            lag = await _lag(js)
            return lag if all(v == 0 for v in lag.values()) else None

        await _eventually(drained, 60, "every consumer's lag to return to 0")
        drained_s = time.monotonic() - injected

        # The runs the poison belonged to ended, and say why, in the runs list too.
        for name, run_id in victims.items():
            row = await _eventually(
                lambda run_id=run_id: _failed_row(client, run_id), 30, f"{name} failed"
            )
            assert "could not be processed" in row["error"], row
            events = await log.events(run_id)
            assert events[-1].type == "run.failed", [e.type for e in events]
            assert events[-1].data["reason"] == "poison_message"

    letters = [d for d in await _letters(js) if marker in d.payload]
    where = sorted({(d.stream, d.consumer) for d in letters})
    assert where == sorted(CONSUMERS), where
    assert all(d.reason for d in letters)
    print(f"poison: lag back to 0 within {drained_s:.1f} s of injection; {len(letters)} letters")


async def _failed_row(client: Any, run_id: str) -> dict[str, Any] | None:
    resp = await client.get(f"/v1/runs/{run_id}")
    row: dict[str, Any] = resp.json()
    return row if resp.status_code == 200 and row["status"] == "failed" else None
