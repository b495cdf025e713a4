"""The deliverables service's Prometheus metrics: job attempts and failures by kind."""

from __future__ import annotations

from prometheus_client import Counter

JOB_ATTEMPTS = Counter(
    "runloom_job_attempts",
    "Deliverable job attempts started, by kind (report, website, slides)",
    ["kind"],
)
JOB_FAILURES = Counter(
    "runloom_job_failures",
    "Deliverable job attempts that failed, by kind and whether it was final (no retry left)",
    ["kind", "final"],
)
JOBS_READY = Counter(
    "runloom_jobs_ready", "Deliverable jobs that produced their artifacts, by kind", ["kind"]
)
