"""The orchestrator's Prometheus metrics: runs driven, provider rate limits.

Provider calls, tokens and cost are counted where they are metered (`runloom.billing_client`).
"""

from __future__ import annotations

from prometheus_client import Counter

RUNS_DRIVEN = Counter(
    "runloom_runs_driven",
    "Times this replica took a run as far as it could, by outcome (completed, paused, ...)",
    ["outcome"],
)
RATE_LIMITS = Counter(
    "runloom_provider_rate_limits",
    "Rate-limit answers (HTTP 429) from a provider, each shown on its run",
    ["provider"],
)
