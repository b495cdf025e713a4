"""The webhooks service's Prometheus metrics (labels: outcome, never a tenant or endpoint)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram
from runloom.runtime.metrics import LATENCY_BUCKETS

ATTEMPTS = Counter(
    "runloom_webhook_attempts",
    "Webhook attempts, by outcome: delivered (2xx), retry (failed, tried again later), failed "
    "(failed and out of retries), disabled (failed and the endpoint was disabled)",
    ["outcome"],
)
DELIVERIES = Counter(
    "runloom_webhook_deliveries",
    "Deliveries stored for endpoints (one per subscribed event and endpoint)",
)
ATTEMPT_DURATION = Histogram(
    "runloom_webhook_attempt_duration_seconds",
    "Time one attempt took (connect, send, first bytes of the answer)",
    buckets=LATENCY_BUCKETS,
)
OLDEST_PENDING = Gauge(
    "runloom_webhook_oldest_pending_age_seconds",
    "Age of the oldest delivery not yet answered 2xx, for an enabled endpoint (0: none)",
)
ENDPOINTS_DISABLED = Gauge(
    "runloom_webhook_endpoints_disabled",
    "Endpoints disabled after failing for long (or answering 410 Gone)",
)
