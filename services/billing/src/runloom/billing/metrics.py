"""Billing's Prometheus metrics: reservations granted and refused, commits, releases."""

from __future__ import annotations

from prometheus_client import Counter

RESERVATIONS = Counter(
    "runloom_budget_reservations",
    "Reservation requests answered, by outcome (granted, refused)",
    ["outcome"],
)
REFUSALS = Counter(
    "runloom_budget_refusals",
    "Reservations refused because a budget would be exceeded, by scope (run, tenant)",
    ["scope"],
)
REQUESTS = Counter(
    "runloom_billing_requests",
    "Billing requests answered, by operation (reserve, commit, release, budget.get, budget.set,"
    " usage.run, usage.range) and result (ok, error)",
    ["operation", "result"],
)
