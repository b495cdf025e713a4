"""Prometheus metrics every service shares: the event log, publishing, consumers, dead letters.

Names follow Prometheus conventions (`runloom_` prefix, base units, `_total` on counters, which
prometheus-client adds, `_seconds` histograms). Labels are low-cardinality: event types,
durables, streams, never a run or tenant id. The consumers' per-outcome counts
(`runloom_messages_processed_total`) are collected from `runloom.runtime.consumer.STATS`.
Service-specific metrics live beside their service (`runloom.<service>.metrics`) in the same
process registry. The README lists them all.
"""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Seconds; for operations that take milliseconds normally and seconds when something is wrong."""
WORK_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0)
"""Seconds; for handlers that run a whole run or render a deliverable."""

# -- the process ----------------------------------------------------------------------------------
MEMORY_TRIM_SECONDS = Gauge(
    "runloom_memory_trim_seconds",
    "How long the latest hand-back of the C allocator's free memory to the system took",
)

# -- the event log ------------------------------------------------------------------------------
EVENTS_APPENDED = Counter(
    "runloom_events_appended", "Events appended to run logs by this process", ["type"]
)
APPEND_DURATION = Histogram(
    "runloom_event_append_duration_seconds",
    "Time from append() to the stored acknowledgement, retries included",
    buckets=LATENCY_BUCKETS,
)
APPEND_CONFLICTS = Counter(
    "runloom_event_append_conflicts",
    "Appends that lost the race for a run's next seq (expected last sequence mismatch)",
)
STORE_FULL = Gauge(
    "runloom_event_store_full",
    "1 while this process's latest append was refused for want of space (the event store is "
    "full), 0 once one is stored again",
)
APPENDS_REFUSED = Counter(
    "runloom_event_appends_refused",
    "Appends the event store refused with nothing stored, by reason (store_full: JetStream's "
    "storage limit or the stream's max_bytes reached)",
    ["reason"],
)
APPEND_RETRIES = Counter(
    "runloom_event_append_retries",
    "Append attempts made again after an unknown outcome, by reason (timeout)",
    ["reason"],
)

# -- publishing and consuming -------------------------------------------------------------------
MESSAGES_PUBLISHED = Counter(
    "runloom_messages_published",
    "Messages published to JetStream (commands, jobs, dead letters), by destination template",
    ["destination"],
)
MESSAGE_REDELIVERIES = Counter(
    "runloom_message_redeliveries",
    "Messages this process received again (delivered more than once)",
    ["durable"],
)
MESSAGE_DURATION = Histogram(
    "runloom_message_process_duration_seconds",
    "Time a handler took on one message",
    ["durable"],
    buckets=WORK_BUCKETS,
)
DEAD_LETTERS = Counter(
    "runloom_dead_letters",
    "Messages set apart on the dead-letter stream, with their reason",
    ["stream", "consumer"],
)
CONSUMER_PENDING = Gauge(
    "runloom_consumer_pending_messages",
    "Messages stored for a durable consumer and not yet delivered (the server's count)",
    ["stream", "durable"],
)
CONSUMER_ACK_PENDING = Gauge(
    "runloom_consumer_ack_pending_messages",
    "Messages delivered to a durable consumer and not yet acknowledged",
    ["stream", "durable"],
)
CONSUMER_REDELIVERED = Gauge(
    "runloom_consumer_redelivered_messages",
    "Messages of a durable consumer delivered more than once and still unacknowledged",
    ["stream", "durable"],
)


STREAM_BYTES = Gauge(
    "runloom_stream_bytes", "Bytes a JetStream stream stores (server's count)", ["stream"]
)
STREAM_MAX_BYTES = Gauge(
    "runloom_stream_max_bytes",
    "The stream's own byte limit (max_bytes; 0 when it has none)",
    ["stream"],
)
JETSTREAM_STORAGE_BYTES = Gauge(
    "runloom_jetstream_storage_bytes",
    "Bytes of file storage JetStream uses for the account, every stream included",
)


def storage_gauges(js: Any, streams: Any) -> Any:
    """A scrape hook refreshing the storage gauges: each of `streams`' bytes and limit, and the
    account's file storage in use (the event store's disk use)."""

    async def refresh() -> None:
        for name in streams:
            info = await js.stream_info(name)
            STREAM_BYTES.labels(name).set(int(info.state.bytes or 0))
            STREAM_MAX_BYTES.labels(name).set(max(0, int(info.config.max_bytes or 0)))
        account = await js.account_info()
        JETSTREAM_STORAGE_BYTES.set(int(account.storage or 0))

    return refresh


def consumer_gauges(js: Any, stream: str, durable: str) -> Any:
    """A scrape hook refreshing the consumer gauges of one durable from the server."""

    async def refresh() -> None:
        info = await js.consumer_info(stream, durable)
        CONSUMER_PENDING.labels(stream, durable).set(int(info.num_pending or 0))
        CONSUMER_ACK_PENDING.labels(stream, durable).set(int(info.num_ack_pending or 0))
        CONSUMER_REDELIVERED.labels(stream, durable).set(int(info.num_redelivered or 0))

    return refresh
