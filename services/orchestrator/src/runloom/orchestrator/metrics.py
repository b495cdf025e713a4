"""The orchestrator's Prometheus metrics: runs driven, provider rate limits.

Provider calls, tokens and cost are counted where they are metered (`runloom.billing_client`).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
QUEUE_DEPTH = Gauge(
    "runloom_tenant_queue_depth",
    "Runs of a tenant waiting to start (cluster-wide: every replica reports the same)",
    ["tenant"],
)
QUEUE_OLDEST = Gauge(
    "runloom_tenant_queue_oldest_seconds",
    "How long the tenant's longest-waiting run has waited to start (cluster-wide)",
    ["tenant"],
)
DISPATCH_WAIT = Histogram(
    "runloom_tenant_queue_wait_seconds",
    "From a run's admission to its dispatch, by tenant (observed by the dispatching replica)",
    ["tenant"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0),
)
