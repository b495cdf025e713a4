"""The gateway's Prometheus metrics: SSE clients and fan-out, event latency, archive lag.

The fan-out figures are read from the hub at scrape time (a collector: nothing is added to
the streaming path); the archive lag is read from the archive consumer before each scrape.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from runloom.contracts import subjects
from runloom.gateway.store import archive

SSE_EVENT_LATENCY = Histogram(
    "runloom_sse_event_latency_seconds",
    "From an event's append (its `time`) to the gateway handing it to the run's SSE clients",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
ARCHIVE_LAG = Gauge(
    "runloom_archive_lag_events",
    "Run events stored in JetStream and not yet archived in PostgreSQL",
)
DATABASE_FULL = Counter(
    "runloom_database_full_refusals",
    "Requests answered 503 because PostgreSQL refused a write for want of disk space",
)
QUOTA_REFUSED = Counter(
    "runloom_quota_refused",
    "Requests refused with 429 because a tenant was over a quota, by tenant and quota",
    ["tenant", "quota"],
)


HTTP_REQUESTS = Counter(
    "runloom_http_requests",
    "HTTP requests answered by the gateway, by method, route template and status",
    ["method", "route", "status"],
)
HTTP_DURATION = Histogram(
    "runloom_http_request_duration_seconds",
    "Time from a request's arrival to its response's first byte, by method and route",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)


def observe_event_latency(event_time: datetime) -> None:
    """Time since the event's writer stamped it (wall clocks: across hosts, mind their skew)."""
    SSE_EVENT_LATENCY.observe(max(0.0, time.time() - event_time.timestamp()))


class StreamingCollector(Collector):
    """Reads the SSE hub's counts when scraped."""

    def __init__(self) -> None:
        self.hub: Any = None

    def collect(self) -> Iterator[Metric]:
        hub = self.hub
        if hub is None:
            return
        yield GaugeMetricFamily(
            "runloom_sse_clients", "SSE connections open on this gateway", value=hub.client_count
        )
        yield GaugeMetricFamily(
            "runloom_sse_runs_followed",
            "Runs with a live subscription on this gateway (one per run, shared by its clients)",
            value=len(hub.feeds),
        )
        yield CounterMetricFamily(
            "runloom_sse_events_fanned_out",
            "Events handed to a run's SSE clients (once per event and gateway)",
            value=hub.delivered,
        )
        yield CounterMetricFamily(
            "runloom_sse_frames_pushed",
            "Frames written to an SSE connection straight from the run's feed; the others waited"
            " in the client's queue for its writer (the feed or the client was behind)",
            value=hub.pushed,
        )
        yield CounterMetricFamily(
            "runloom_sse_gaps_repaired",
            "Times a run's subscription missed events and the gap was filled from the log",
            value=hub.gaps_repaired,
        )
        yield CounterMetricFamily(
            "runloom_sse_clients_cut",
            "SSE clients cut off because they stalled (their queue overflowed)",
            value=hub.stalled_cut,
        )


STREAMING = StreamingCollector()
REGISTRY.register(STREAMING)


def archive_lag(js: Any) -> Any:
    """A scrape hook: the archive consumer's backlog (pending + unacknowledged)."""

    async def refresh() -> None:
        info = await js.consumer_info(subjects.RUN_EVENTS_STREAM, archive.DURABLE)
        ARCHIVE_LAG.set(int(info.num_pending or 0) + int(info.num_ack_pending or 0))

    return refresh
