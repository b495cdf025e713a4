"""The lifecycle service's Prometheus metrics (labels: origin and outcome, never a tenant)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram
from runloom.runtime.metrics import WORK_BUCKETS

ERASURES = Counter(
    "runloom_erasures",
    "Erasure jobs run, by origin (request: DELETE /v1/runs through the gateway; retention; "
    "resumed: a job left unfinished) and outcome (done, unfinished: recorded, resumed later)",
    ["origin", "outcome"],
)
ERASURE_DURATION = Histogram(
    "runloom_erasure_duration_seconds",
    "Time one erasure job took to run (or to stop unfinished)",
    buckets=WORK_BUCKETS,
)
SWEEPS = Counter(
    "runloom_retention_sweeps",
    "Retention sweeps, by outcome: done, skipped (another replica holds the lease), failed",
    ["outcome"],
)
LAST_SWEEP = Gauge(
    "runloom_retention_last_sweep_timestamp_seconds",
    "When this replica last finished a retention sweep (Unix time; 0: not yet)",
)
