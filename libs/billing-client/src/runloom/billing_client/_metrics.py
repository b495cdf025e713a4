"""Metering's Prometheus metrics (in the process that meters: the orchestrator): provider calls,
tokens and cost by model, tool calls, and the budget refusals a run stopped on."""

from __future__ import annotations

from prometheus_client import Counter

PROVIDER_CALLS = Counter(
    "runloom_provider_calls",
    "Metered provider calls committed to billing, by provider and model",
    ["provider", "model"],
)
PROVIDER_TOKENS = Counter(
    "runloom_provider_tokens",
    "Tokens of committed provider calls, by model and direction (input, output)",
    ["provider", "model", "direction"],
)
PROVIDER_COST = Counter(
    "runloom_provider_cost_usd",
    "Cost billing priced the committed provider calls at, in US dollars, by model",
    ["provider", "model"],
)
TOOL_CALLS = Counter(
    "runloom_tool_calls", "Metered tool calls committed to billing, by tool", ["tool"]
)
BUDGET_STOPS = Counter(
    "runloom_budget_refusals_seen",
    "Reservations billing refused because a budget would be exceeded, by scope (run, tenant)",
    ["scope"],
)


def committed(
    kind: str,
    provider: str | None,
    model: str | None,
    tool: str | None,
    input_tokens: int,
    output_tokens: int,
    cost_usd: float,
) -> None:
    """Count one committed call."""
    if kind == "provider":
        p, m = provider or "unknown", model or "unknown"
        PROVIDER_CALLS.labels(p, m).inc()
        PROVIDER_TOKENS.labels(p, m, "input").inc(max(input_tokens, 0))
        PROVIDER_TOKENS.labels(p, m, "output").inc(max(output_tokens, 0))
        PROVIDER_COST.labels(p, m).inc(max(cost_usd, 0.0))
    else:
        TOOL_CALLS.labels(tool or "unknown").inc()
