"""Concurrent reservations through the real request/reply path never take a budget past its limit.

Property-based: hypothesis picks the prices, the budget scope, the order in which the requests
leave and which of them are retried; a real billing process answers over NATS, Postgres holds
the budgets.
"""

from __future__ import annotations

import asyncio
import random
from decimal import Decimal
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from runloom.contracts import subjects
from runloom.contracts.commands import ReserveReply, ReserveRequest
from runloom.contracts.ids import new_id

N = 100
FITS = 37

_examples = settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


async def _reserve_all(nc: Any, requests: list[ReserveRequest]) -> list[ReserveReply]:
    async def one(req: ReserveRequest) -> ReserveReply:
        msg = await nc.request(subjects.BILLING_RESERVE, msgspec.json.encode(req), timeout=20)
        assert not (msg.headers or {}).get("Runloom-Error"), msg.headers
        return msgspec.json.decode(msg.data, type=ReserveReply)

    return await asyncio.gather(*(one(r) for r in requests))


async def _held(pool: Any, run_id: str, tenant_id: str) -> tuple[Decimal, Decimal]:
    run = await pool.fetchval("SELECT held_usd FROM billing_run_accounts WHERE run_id=$1", run_id)
    ten = await pool.fetchval(
        "SELECT sum(held_usd) FROM billing_tenant_periods WHERE tenant_id=$1", tenant_id
    )
    return run, ten


@_examples
@given(
    unit_micro=st.integers(min_value=1, max_value=200_000),
    slack=st.floats(min_value=0.0, max_value=0.999),
    scope=st.sampled_from(["run", "tenant"]),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
    retried=st.integers(min_value=0, max_value=20),
)
async def test_100_concurrent_reservations_grant_exactly_the_37_that_fit(
    billing, nc, pool, make_run, unit_micro, slack, scope, seed, retried
):
    tenant = f"t-{new_id('x')[-10:].lower()}"
    budget_micro = FITS * unit_micro + int(slack * unit_micro)  # 37 fit, a 38th does not
    budget = budget_micro / 1_000_000
    if scope == "tenant":
        await pool.execute(
            "INSERT INTO billing_budgets(tenant_id, amount_usd) VALUES ($1, $2)",
            tenant,
            Decimal(budget_micro) / 1_000_000,
        )
        run_id = await make_run(tenant, None)
    else:
        run_id = await make_run(tenant, budget)
    cost = unit_micro / 1_000_000
    requests = [
        ReserveRequest(
            reservation_id=new_id("res"),
            tenant_id=tenant,
            run_id=run_id,
            estimated_usd=cost,
            kind="provider",
            provider="offline",
            model="extractive",
        )
        for _ in range(N)
    ]
    rng = random.Random(seed)
    sent = requests + rng.sample(requests, retried)  # some requests retried concurrently
    rng.shuffle(sent)

    replies = await _reserve_all(nc, sent)

    by_id: dict[str, list[ReserveReply]] = {}
    for reply in replies:
        by_id.setdefault(reply.reservation_id, []).append(reply)
    # A retried request gets the same answer as the first.
    assert all(len({msgspec.json.encode(r) for r in rs}) == 1 for rs in by_id.values())
    granted = [rid for rid, rs in by_id.items() if rs[0].granted]
    refused = [rs[0] for rs in by_id.values() if not rs[0].granted]
    assert len(granted) == FITS
    assert {r.scope for r in refused} == {scope}
    run_held, tenant_held = await _held(pool, run_id, tenant)
    assert run_held == tenant_held == FITS * Decimal(unit_micro) / 1_000_000
    assert run_held <= Decimal(budget_micro) / 1_000_000
    assert max(r.run_spent_usd for r in replies) <= budget


@_examples
@given(
    costs_micro=st.lists(st.integers(min_value=0, max_value=100_000), min_size=N, max_size=N),
    budget_micro=st.integers(min_value=0, max_value=3_000_000),
)
async def test_random_costs_never_exceed_the_budget_and_nothing_that_fits_is_refused(
    billing, nc, pool, tenant, make_run, costs_micro, budget_micro
):
    run_id = await make_run(tenant, budget_micro / 1_000_000)
    requests = [
        ReserveRequest(
            reservation_id=new_id("res"),
            tenant_id=tenant,
            run_id=run_id,
            estimated_usd=c / 1_000_000,
            kind="tool",
            tool="corpus_search",
        )
        for c in costs_micro
    ]
    replies = await _reserve_all(nc, requests)

    held_micro = sum(c for c, r in zip(costs_micro, replies, strict=True) if r.granted)
    assert held_micro <= budget_micro
    run_held = await pool.fetchval(
        "SELECT held_usd FROM billing_run_accounts WHERE run_id=$1", run_id
    )
    assert run_held == Decimal(held_micro) / 1_000_000
    # Holds only grow here, so a refused request did not fit even in the final headroom.
    for c, r in zip(costs_micro, replies, strict=True):
        if not r.granted:
            assert r.scope == "run"
            assert c > budget_micro - held_micro


async def test_two_billing_replicas_share_the_budget_exactly(
    billing, more_billing, nc, pool, tenant, make_run
):
    """The queue group spreads the requests over both replicas; row locks keep them exact."""
    await more_billing()
    run_id = await make_run(tenant, FITS * 0.001)
    requests = [
        ReserveRequest(
            reservation_id=new_id("res"),
            tenant_id=tenant,
            run_id=run_id,
            estimated_usd=0.001,
            kind="tool",
            tool="corpus_search",
        )
        for _ in range(N)
    ]
    replies = await _reserve_all(nc, requests)
    assert sum(r.granted for r in replies) == FITS
    held = await pool.fetchval("SELECT held_usd FROM billing_run_accounts WHERE run_id=$1", run_id)
    assert held == Decimal("0.037")
