"""The weighted round-robin of the dispatcher (pure): shares by weight, limits, no banked credit."""

from __future__ import annotations

from runloom.orchestrator.dispatch import _Tenant, pick


def tenants(**spec: tuple[int, int, int, float, float]) -> dict[str, _Tenant]:
    return {name: _Tenant(*values) for name, values in spec.items()}


def test_tenants_alternate_and_weights_give_shares() -> None:
    ts = tenants(a=(0, 500, 100, 1.0, 0.0), b=(0, 3, 100, 1.0, 0.0))
    picks, _ = pick(ts, 6, 0.0)
    assert picks == ["a", "b", "a", "b", "a", "b"]  # B is not behind A's 500
    ts = tenants(a=(0, 50, 100, 2.0, 0.0), b=(0, 50, 100, 1.0, 0.0))
    picks, _ = pick(ts, 30, 0.0)
    assert picks.count("a") == 20 and picks.count("b") == 10


def test_a_tenant_at_its_limit_waits_and_the_free_slots_go_to_others() -> None:
    ts = tenants(a=(2, 10, 2, 1.0, 0.0), b=(0, 1, 2, 1.0, 5.0))
    picks, _ = pick(ts, 4, 0.0)
    assert picks == ["b"]
    assert (ts["a"].running, ts["b"].running, ts["b"].waiting) == (2, 1, 0)


def test_a_tenant_back_from_idle_starts_at_the_clock_not_with_credit() -> None:
    # A has run for a long time (virtual time 100); B ran long ago (1) and is back.
    ts = tenants(a=(0, 10, 100, 1.0, 100.0), b=(0, 10, 100, 1.0, 1.0))
    picks, clock = pick(ts, 4, 100.0)
    assert picks == ["a", "b", "a", "b"]  # not B four times for the credit it did not use
    assert clock >= 100.0


def test_a_tenant_arriving_while_another_fills_the_platform_gets_the_freed_slots_first() -> None:
    # A holds all 8 slots with 400 more waiting; B asks 3: the next 3 slots that free are B's.
    ts = tenants(a=(8, 400, 8, 1.0, 50.0), b=(0, 3, 8, 1.0, 0.0))
    picks = []
    clock = 50.0
    for _ in range(5):  # one slot frees at a time (one of A's runs ends)
        ts["a"].running -= 1
        got, clock = pick(ts, 1, clock)
        picks += got
    assert picks == ["b", "b", "b", "a", "a"]
