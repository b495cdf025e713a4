"""Budgets in the real Postgres: reserve, commit, release, expire; idempotent by reservation id."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgspec
from runloom.billing.accounts import Accounts
from runloom.contracts.commands import CommitRequest, ReleaseRequest, ReserveRequest
from runloom.contracts.events import Usage
from runloom.contracts.ids import new_id


def _req(run_id: str, tenant_id: str, usd: float, rid: str | None = None, **kw: Any) -> Any:
    return ReserveRequest(
        reservation_id=rid or new_id("res"),
        tenant_id=tenant_id,
        run_id=run_id,
        estimated_usd=usd,
        kind=kw.pop("kind", "provider"),
        provider=kw.pop("provider", "offline"),
        model=kw.pop("model", "extractive"),
        **kw,
    )


async def _account(pool: Any, run_id: str) -> tuple[Decimal, Decimal]:
    row = await pool.fetchrow(
        "SELECT held_usd, spent_usd FROM billing_run_accounts WHERE run_id=$1", run_id
    )
    return row["held_usd"], row["spent_usd"]


async def test_reserve_commit_prices_actual_usage(accounts: Accounts, pool, tenant, make_run):
    run_id = await make_run(tenant, 1.0)
    req = _req(run_id, tenant, 0.01)
    reply = await accounts.reserve(req)
    assert reply.granted and reply.run_budget_usd == 1.0 and reply.run_spent_usd == 0.01
    assert await _account(pool, run_id) == (Decimal("0.01"), 0)

    usage = Usage(input_tokens=1000, output_tokens=500)
    commit = CommitRequest(
        reservation_id=req.reservation_id,
        tenant_id=tenant,
        run_id=run_id,
        usage=usage,
        provider="offline",
        model="extractive",
        usage_id="u1",
    )
    done = await accounts.commit(commit)
    # offline/extractive: $1 per M input, $4 per M output
    assert done.ok and done.cost_usd == 0.003
    assert done.price_version == accounts.prices.version
    assert await _account(pool, run_id) == (0, Decimal("0.003"))
    # A retried commit gets the same answer and counts nothing twice.
    assert await accounts.commit(commit) == msgspec.structs.replace(done, replayed=True)
    assert await _account(pool, run_id) == (0, Decimal("0.003"))
    # A retried reserve gets the same answer and holds nothing twice.
    assert (await accounts.reserve(req)).granted
    assert await _account(pool, run_id) == (0, Decimal("0.003"))


async def test_run_budget_refuses_with_scope_run(accounts: Accounts, tenant, make_run):
    run_id = await make_run(tenant, 0.05)
    assert (await accounts.reserve(_req(run_id, tenant, 0.03))).granted
    refused = await accounts.reserve(_req(run_id, tenant, 0.03))
    assert not refused.granted and refused.scope == "run"
    assert "run budget of $0.0500 would be exceeded" in (refused.reason or "")
    assert refused.run_spent_usd == 0.03
    # What still fits is granted.
    assert (await accounts.reserve(_req(run_id, tenant, 0.02))).granted


async def test_tenant_budget_refuses_with_scope_tenant(accounts: Accounts, pool, tenant, make_run):
    await pool.execute(
        "INSERT INTO billing_budgets(tenant_id, amount_usd) VALUES ($1, 0.1)", tenant
    )
    run_a = await make_run(tenant, None)
    run_b = await make_run(tenant, 5.0)
    assert (await accounts.reserve(_req(run_a, tenant, 0.06))).granted
    refused = await accounts.reserve(_req(run_b, tenant, 0.05))
    assert not refused.granted and refused.scope == "tenant"
    assert refused.tenant_budget_usd == 0.1 and refused.tenant_spent_usd == 0.06


async def test_warning_when_a_reservation_takes_a_budget_to_80_percent(
    accounts: Accounts, tenant, make_run
):
    run_id = await make_run(tenant, 1.0)
    assert (await accounts.reserve(_req(run_id, tenant, 0.79))).warnings == []
    assert (await accounts.reserve(_req(run_id, tenant, 0.01))).warnings == ["run"]


async def test_release_and_expiry_free_the_hold(accounts: Accounts, pool, tenant, make_run):
    run_id = await make_run(tenant, 0.1)
    kept = _req(run_id, tenant, 0.06)
    assert (await accounts.reserve(kept)).granted
    assert not (await accounts.reserve(_req(run_id, tenant, 0.06))).granted
    release = ReleaseRequest(reservation_id=kept.reservation_id, tenant_id=tenant, run_id=run_id)
    assert (await accounts.release(release)).ok
    assert (await accounts.release(release)).ok  # idempotent
    assert await _account(pool, run_id) == (0, 0)

    crashed = _req(run_id, tenant, 0.07, ttl_s=1.0)
    assert (await accounts.reserve(crashed)).granted
    assert not (await accounts.reserve(_req(run_id, tenant, 0.07))).granted
    await pool.execute(
        "UPDATE billing_reservations SET expires_at = now() - interval '1 second' WHERE id=$1",
        crashed.reservation_id,
    )
    assert await accounts.expire_due() >= 1
    status = await pool.fetchval(
        "SELECT status FROM billing_reservations WHERE id=$1", crashed.reservation_id
    )
    assert status == "expired"
    assert (await accounts.reserve(_req(run_id, tenant, 0.07))).granted


async def test_late_commit_of_an_expired_reservation_is_still_counted(
    accounts: Accounts, pool, tenant, make_run
):
    run_id = await make_run(tenant, 1.0)
    req = _req(run_id, tenant, 0.5, kind="tool", tool="web_fetch", provider=None, model=None)
    assert (await accounts.reserve(req)).granted
    await pool.execute(
        "UPDATE billing_reservations SET expires_at = now() - interval '1 second' WHERE id=$1",
        req.reservation_id,
    )
    await accounts.expire_due()
    reply = await accounts.commit(
        CommitRequest(
            reservation_id=req.reservation_id,
            tenant_id=tenant,
            run_id=run_id,
            usage=Usage(tool_calls=1),
            tool="web_fetch",
        )
    )
    assert reply.ok and reply.cost_usd == 0.001
    assert await _account(pool, run_id) == (0, Decimal("0.001"))


async def test_another_tenants_run_is_refused(accounts: Accounts, pool, tenant, make_run):
    run_id = await make_run(tenant, 10.0)
    other = f"{tenant}-other"
    refused = await accounts.reserve(_req(run_id, other, 0.01))
    assert not refused.granted and "another tenant" in (refused.reason or "")
    mine = _req(run_id, tenant, 0.01)
    await accounts.reserve(mine)
    release = ReleaseRequest(reservation_id=mine.reservation_id, tenant_id=other, run_id=run_id)
    assert not (await accounts.release(release)).ok
    assert await _account(pool, run_id) == (Decimal("0.01"), 0)


async def test_run_budget_from_run_created_when_runs_row_is_missing(pool, tenant):
    from runloom.billing_client import load_prices

    async def lookup(run_id: str) -> tuple[str, Decimal]:
        return tenant, Decimal("0.02")

    accounts = Accounts(pool=pool, prices=load_prices(), run_budget=lookup)
    run_id = new_id("run")
    assert (await accounts.reserve(_req(run_id, tenant, 0.02))).granted
    refused = await accounts.reserve(_req(run_id, tenant, 0.001))
    assert refused.scope == "run" and refused.run_budget_usd == 0.02


async def test_invalid_estimate_is_refused_clearly(accounts: Accounts, tenant, make_run):
    run_id = await make_run(tenant, 1.0)
    reply = await accounts.reserve(_req(run_id, tenant, float("nan")))
    assert not reply.granted and reply.scope == "request" and "finite" in (reply.reason or "")


async def test_a_batch_applies_in_order_as_one_transaction(
    accounts: Accounts, pool, tenant, make_run
):
    run_id = await make_run(tenant, 0.1)
    a = _req(run_id, tenant, 0.05)
    b = _req(run_id, tenant, 0.05)
    c = _req(run_id, tenant, 0.01)
    commit_a = CommitRequest(
        reservation_id=a.reservation_id,
        tenant_id=tenant,
        run_id=run_id,
        usage=Usage(input_tokens=10_000),
        provider="offline",
        model="extractive",
    )
    release_b = ReleaseRequest(reservation_id=b.reservation_id, tenant_id=tenant, run_id=run_id)
    replies = await accounts.apply([a, a, b, c, commit_a, release_b, c])
    assert [getattr(r, "granted", None) for r in replies[:4]] == [True, True, True, False]
    assert replies[0] == replies[1]  # the same request twice in one batch: one hold
    assert replies[4].ok and replies[4].cost_usd == 0.01  # type: ignore[union-attr]
    assert replies[5].ok  # type: ignore[union-attr]
    assert replies[6] == replies[3]  # a retry gets the first answer, though it would fit now
    assert await _account(pool, run_id) == (0, Decimal("0.01"))


async def test_reserving_again_after_release_checks_and_holds_anew(
    accounts: Accounts, pool, tenant, make_run
):
    run_id = await make_run(tenant, 0.1)
    again = _req(run_id, tenant, 0.06)
    assert (await accounts.reserve(again)).granted
    release = ReleaseRequest(reservation_id=again.reservation_id, tenant_id=tenant, run_id=run_id)
    await accounts.release(release)
    # A caller retrying a failed call under the same id is held again, not waved through.
    assert (await accounts.reserve(again)).granted
    assert await _account(pool, run_id) == (Decimal("0.06"), 0)
    await accounts.release(release)
    assert (await accounts.reserve(_req(run_id, tenant, 0.05))).granted
    refused = await accounts.reserve(again)
    assert not refused.granted and refused.scope == "run"
    assert await _account(pool, run_id) == (Decimal("0.05"), 0)
