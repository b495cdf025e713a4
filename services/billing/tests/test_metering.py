"""The orchestrator's Meter against a real billing process: reserve, commit, budgets, outages."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Any

import pytest
from runloom.billing.ledger import ledger_total, reconcile
from runloom.billing_client import BudgetExceeded, Meter, MeterOptions
from runloom.contracts.events import Usage
from runloom.contracts.ids import new_id
from runloom.runtime.eventlog import EventLog

FAST = MeterOptions(request_timeout_s=1.0, backoff_initial_s=0.05, backoff_max_s=0.3)


async def _poll(predicate: Any, timeout: float = 15.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await predicate()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def _new_run(log: EventLog, make_run: Any, tenant: str, budget: float | None) -> str:
    return str(await make_run(tenant, budget))  # stores run.created


async def _types(log: EventLog, run_id: str) -> list[str]:
    return [e.type for e in await log.events(run_id)]


async def _provider_call(meter: Meter, run_id: str, tenant: str, n: int) -> float:
    estimate = meter.estimate_provider("offline", "extractive", 1000, 500)
    res = await meter.reserve(
        run_id=run_id,
        tenant_id=tenant,
        kind="provider",
        estimated_usd=estimate,
        reservation_id=f"res-{run_id}-{n}",
        provider="offline",
        model="extractive",
    )
    return await meter.commit(
        res, Usage(input_tokens=1000, output_tokens=400), usage_id=f"{run_id}-{n}", step_id="s1"
    )


async def test_commit_records_the_priced_usage_once_and_the_ledger_reconciles(
    billing, nc, js, pool, tenant, make_run
):
    log = EventLog(js, "test-orchestrator")
    meter = Meter(nc, log, options=FAST)
    run_id = await _new_run(log, make_run, tenant, 1.0)

    costs = [await _provider_call(meter, run_id, tenant, n) for n in range(3)]
    assert costs == [0.0026] * 3  # 1000 in at $1/M + 400 out at $4/M
    # A retried commit (the orchestrator resumed after a crash) changes nothing.
    assert await _provider_call(meter, run_id, tenant, 0) == 0.0026

    events = await log.events(run_id)
    usage = [e for e in events if e.type == "usage.recorded"]
    assert [e.id for e in usage] == [f"usage-{run_id}-{n}" for n in range(3)]
    assert [e.data["cost_usd"] for e in usage] == costs

    await _poll(
        lambda: _ledger_rows_are(pool, run_id, 3), what="the ledger to record 3 usage events"
    )
    total, _ = await ledger_total(pool, run_id=run_id)
    assert total == Decimal("0.0078")
    rec = await reconcile(pool, run_id=run_id)
    assert rec.balanced and rec.ledger_usd == rec.committed_usd == Decimal("0.0078")


async def _ledger_rows_are(pool: Any, run_id: str, n: int) -> bool:
    return (await ledger_total(pool, run_id=run_id))[1] == n


async def test_budget_exceeded_before_spending_and_one_warning_per_scope(
    billing, nc, js, pool, tenant, make_run
):
    log = EventLog(js, "test-orchestrator")
    meter = Meter(nc, log, options=FAST)
    run_id = await _new_run(log, make_run, tenant, 0.01)

    spent = 0.0
    with pytest.raises(BudgetExceeded) as info:
        for n in range(20):
            spent += await _provider_call(meter, run_id, tenant, n)
    assert info.value.scope == "run" and info.value.budget_usd == 0.01
    assert spent <= 0.01
    types = await _types(log, run_id)
    assert types.count("budget.warning") == 1
    warning = next(e for e in await log.events(run_id) if e.type == "budget.warning")
    assert warning.data["scope"] == "run" and warning.data["fraction"] >= 0.8
    # Still above 80%: neither this Meter nor a fresh one (an orchestrator that took the run
    # over) warns again.
    await meter.reserve(
        run_id=run_id,
        tenant_id=tenant,
        kind="tool",
        estimated_usd=0.0005,
        reservation_id=new_id("res"),
        tool="corpus_search",
    )
    other = Meter(nc, log, options=FAST)
    await other.reserve(
        run_id=run_id,
        tenant_id=tenant,
        kind="tool",
        estimated_usd=0.0005,
        reservation_id=new_id("res"),
        tool="corpus_search",
    )
    assert (await _types(log, run_id)).count("budget.warning") == 1


async def test_billing_killed_run_waits_visibly_then_resumes_and_the_ledger_adds_up(
    billing, nc, js, pool, tenant, make_run
):
    log = EventLog(js, "test-orchestrator")
    meter = Meter(nc, log, options=FAST)
    run_id = await _new_run(log, make_run, tenant, 1.0)
    await _provider_call(meter, run_id, tenant, 0)

    billing.kill()
    # Three parallel sub-agents reserve while billing is down: none of them may spend.
    calls = [asyncio.create_task(_provider_call(meter, run_id, tenant, n)) for n in (1, 2, 3)]
    await _poll(lambda: _has(log, run_id, "billing.waiting"), what="billing.waiting on the run")
    assert not any(c.done() for c in calls)
    await billing.start(nc)
    await asyncio.wait_for(asyncio.gather(*calls), timeout=20)

    events = await log.events(run_id)
    types = [e.type for e in events]
    assert types.count("billing.waiting") == 1 and types.count("billing.resumed") == 1
    assert types.index("billing.waiting") < types.index("billing.resumed")
    assert types.count("usage.recorded") == 4
    waiting = next(e for e in events if e.type == "billing.waiting")
    # "no billing replica is running", or a timeout if the kill caught a request in flight
    assert waiting.data["message"].startswith("Spending is paused: ")
    usage_sum = sum(Decimal(repr(e.data["cost_usd"])) for e in events if e.type == "usage.recorded")
    await _poll(lambda: _ledger_rows_are(pool, run_id, 4), what="4 ledger rows")
    assert (await ledger_total(pool, run_id=run_id))[0] == usage_sum
    assert (await reconcile(pool, run_id=run_id)).balanced


async def test_commit_waits_for_billing_killed_after_the_reservation(
    billing, nc, js, pool, tenant, make_run
):
    log = EventLog(js, "test-orchestrator")
    meter = Meter(nc, log, options=FAST)
    run_id = await _new_run(log, make_run, tenant, 1.0)
    res = await meter.reserve(
        run_id=run_id,
        tenant_id=tenant,
        kind="tool",
        estimated_usd=meter.estimate_tool("web_fetch"),
        reservation_id=new_id("res"),
        tool="web_fetch",
    )
    billing.kill()
    commit = asyncio.create_task(meter.commit(res, Usage(tool_calls=1), usage_id=new_id("u")))
    await _poll(lambda: _has(log, run_id, "billing.waiting"), what="billing.waiting")
    await billing.start(nc)
    assert await asyncio.wait_for(commit, timeout=20) == 0.001
    assert (await _types(log, run_id))[-2:] == ["billing.resumed", "usage.recorded"]


async def test_reserve_is_cancellable_while_billing_is_down(
    billing, nc, js, pool, tenant, make_run
):
    log = EventLog(js, "test-orchestrator")
    meter = Meter(nc, log, options=FAST)
    run_id = await _new_run(log, make_run, tenant, 1.0)
    billing.kill()
    task = asyncio.create_task(
        meter.reserve(
            run_id=run_id,
            tenant_id=tenant,
            kind="tool",
            estimated_usd=0.001,
            reservation_id=new_id("res"),
            tool="web_fetch",
        )
    )
    await _poll(lambda: _has(log, run_id, "billing.waiting"), what="billing.waiting")
    task.cancel()
    started = time.monotonic()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - started < 1.0


async def _has(log: EventLog, run_id: str, event_type: str) -> bool:
    return event_type in await _types(log, run_id)


async def test_a_reservation_left_behind_expires_in_the_running_service(
    billing, nc, js, pool, tenant, make_run
):
    log = EventLog(js, "test-orchestrator")
    meter = Meter(nc, log, options=FAST)
    run_id = await _new_run(log, make_run, tenant, 0.01)
    # A caller reserves most of the budget, then crashes before commit or release.
    await meter.reserve(
        run_id=run_id,
        tenant_id=tenant,
        kind="tool",
        estimated_usd=0.009,
        reservation_id="crashed-caller",
        tool="web_fetch",
        ttl_s=1.0,
    )
    with pytest.raises(BudgetExceeded):
        await meter.reserve(
            run_id=run_id,
            tenant_id=tenant,
            kind="tool",
            estimated_usd=0.009,
            reservation_id="blocked",
            tool="web_fetch",
        )

    async def expired() -> bool:
        status = await pool.fetchval(
            "SELECT status FROM billing_reservations WHERE id='crashed-caller'"
        )
        return status == "expired"

    await _poll(expired, what="the sweeper to expire the reservation")
    await meter.reserve(
        run_id=run_id,
        tenant_id=tenant,
        kind="tool",
        estimated_usd=0.009,
        reservation_id="after-expiry",
        tool="web_fetch",
    )


async def test_postgres_down_billing_answers_unavailable_and_the_run_waits(
    billing, servers, nc, js, tenant, make_run
):
    log = EventLog(js, "test-orchestrator")
    meter = Meter(nc, log, options=FAST)
    run_id = await _new_run(log, make_run, tenant, 1.0)
    servers.postgres.kill()
    try:
        call = asyncio.create_task(_provider_call(meter, run_id, tenant, 0))
        events = await _poll(
            lambda: _events_with(log, run_id, "billing.waiting"), what="billing.waiting"
        )
        waiting = next(e for e in events if e.type == "billing.waiting")
        assert "cannot reach its database" in waiting.data["message"]
        assert not call.done()
    finally:
        servers.postgres.start()
    assert await asyncio.wait_for(call, timeout=30) == 0.0026
    types = await _types(log, run_id)
    assert types[-2:] == ["billing.resumed", "usage.recorded"]


async def _events_with(log: EventLog, run_id: str, event_type: str) -> list[Any]:
    events = await log.events(run_id)
    return events if any(e.type == event_type for e in events) else []


async def test_a_wait_left_open_by_a_dead_orchestrator_is_closed_by_the_next(
    billing, nc, js, pool, tenant, make_run
):
    log = EventLog(js, "test-orchestrator")
    run_id = await _new_run(log, make_run, tenant, 1.0)
    billing.kill()
    first = Meter(nc, log, options=FAST)
    call = asyncio.create_task(_provider_call(first, run_id, tenant, 0))
    await _poll(lambda: _has(log, run_id, "billing.waiting"), what="billing.waiting")
    call.cancel()  # the replica dies while waiting
    with pytest.raises(asyncio.CancelledError):
        await call
    await billing.start(nc)

    takeover = Meter(nc, log, options=FAST)
    await _provider_call(takeover, run_id, tenant, 0)
    await _poll(lambda: _has(log, run_id, "billing.resumed"), what="billing.resumed")
    types = await _types(log, run_id)
    assert types.count("billing.waiting") == 1 and types.count("billing.resumed") == 1
    assert types.index("billing.waiting") < types.index("billing.resumed")
