"""The ledger counts each usage.recorded once, however often it is delivered."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Any

from runloom.billing.ledger import CONSUMER, ledger_total, reconcile
from runloom.contracts import subjects
from runloom.contracts.events import RunCreated, StepStarted, Usage, UsageRecorded, encode_event
from runloom.contracts.ids import new_id
from runloom.runtime.eventlog import EventLog


async def _consumer_caught_up(js: Any, stream_seq: int, timeout: float = 15.0) -> None:
    """Wait until the ledger consumer has acked everything up to `stream_seq`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = await js.consumer_info(subjects.RUN_EVENTS_STREAM, CONSUMER)
        if info.ack_floor.stream_seq >= stream_seq:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the ledger consumer did not reach stream seq {stream_seq}")


async def test_each_usage_event_delivered_twice_is_counted_once(billing, js, pool, tenant):
    log = EventLog(js, "test-orchestrator")
    run_id = new_id("run")
    await log.append(run_id, tenant, RunCreated(question="q"))
    costs = [0.0012, 0.0003, 0.25]
    stored = []
    for n, cost in enumerate(costs):
        await log.append(run_id, tenant, StepStarted(step_id=f"s{n}"))
        stored.append(
            await log.append(
                run_id,
                tenant,
                UsageRecorded(
                    usage_id=f"{run_id}-{n}",
                    kind="provider",
                    provider="offline",
                    model="extractive",
                    usage=Usage(input_tokens=100 * n, output_tokens=10),
                    cost_usd=cost,
                ),
                event_id=f"usage-{run_id}-{n}",
            )
        )
    # Each event stored a second time with its exact bytes, as a writer retrying after the
    # dedup window would: the ledger consumer receives every usage event twice.
    ack = None
    for event in stored:
        ack = await js.publish(
            subjects.run_events(run_id),
            encode_event(event),
            headers={"Runloom-Event-Type": "usage.recorded"},
        )
    assert ack is not None and not ack.duplicate
    await _consumer_caught_up(js, ack.seq)

    total, rows = await ledger_total(pool, run_id=run_id)
    assert rows == 3
    assert total == Decimal("0.2515")
    row = await pool.fetchrow(
        "SELECT tenant_id, input_tokens, output_tokens, price_version FROM billing_ledger"
        " WHERE event_id=$1",
        f"usage-{run_id}-2",
    )
    assert row["tenant_id"] == tenant and row["input_tokens"] == 200
    assert row["price_version"]  # no reservation here: the current table's version


async def test_reconcile_flags_usage_without_a_committed_reservation(billing, js, pool, tenant):
    log = EventLog(js, "test-orchestrator")
    run_id = new_id("run")
    await log.append(run_id, tenant, RunCreated(question="q"))
    event = await log.append(
        run_id,
        tenant,
        UsageRecorded(
            usage_id="stray", kind="tool", tool="web_fetch", cost_usd=0.5, reservation_id="nope"
        ),
        event_id=f"usage-{run_id}-stray",
    )
    await _consumer_caught_up(js, (await log.tail(run_id)).stream_seq)
    rec = await reconcile(pool, run_id=run_id)
    assert not rec.balanced
    assert rec.unreserved == [event.id] and rec.ledger_usd == Decimal("0.5")
    assert rec.committed_usd == 0


async def test_reconcile_command_reports_a_balanced_run(billing, nc, js, pool, settings, tenant):
    import json
    import subprocess
    import sys

    from runloom.billing_client import Meter, MeterOptions

    log = EventLog(js, "test-orchestrator")
    run_id = new_id("run")
    await log.append(run_id, tenant, RunCreated(question="q"))
    meter = Meter(nc, log, options=MeterOptions(backoff_initial_s=0.05))
    res = await meter.reserve(
        run_id=run_id,
        tenant_id=tenant,
        kind="tool",
        estimated_usd=0.001,
        reservation_id=new_id("res"),
        tool="web_fetch",
    )
    await meter.commit(res, Usage(tool_calls=1), usage_id=new_id("u"))
    await _consumer_caught_up(js, (await log.tail(run_id)).stream_seq)

    env = {"RUNLOOM_DATABASE_URL": settings.effective_database_url, "PATH": ""}
    out = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "runloom.billing", "reconcile", "--run", run_id],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["balanced"] and report["ledger_usd"] == report["committed_usd"] == "0.001"
