"""Streaming options of the gateway, from `RUNLOOM_SSE_*` environment variables."""

from __future__ import annotations

import os
from dataclasses import dataclass

from runloom.runtime.config import env_float


@dataclass(frozen=True, kw_only=True)
class StreamingOptions:
    heartbeat_s: float = 15.0
    """Seconds between heartbeat comments on an idle SSE stream (RUNLOOM_SSE_HEARTBEAT_S)."""
    queue_size: int = 1024
    """Frames queued per client before a live client counts as stalled (RUNLOOM_SSE_QUEUE)."""
    watch_interval_s: float = 1.0
    """How long a run's subscription may stay quiet before it is checked against the log."""
    attach_timeout_s: float = 3.0
    """Longest an SSE attach may wait on the event store (cursor check, feed opening) before it
    answers 503 with Retry-After (RUNLOOM_SSE_ATTACH_TIMEOUT_S): a client retried at once,
    perhaps through another gateway, beats one kept waiting on a server that is away."""
    token_ttl_s: float = 300.0
    """Lifetime of a stream token (RUNLOOM_STREAM_TOKEN_TTL_S)."""
    archive: bool = True
    """Run the archive consumer in this process (RUNLOOM_ARCHIVE=0 turns it off)."""

    @classmethod
    def from_env(cls) -> StreamingOptions:
        return cls(
            heartbeat_s=env_float("RUNLOOM_SSE_HEARTBEAT_S", 15.0),
            queue_size=int(env_float("RUNLOOM_SSE_QUEUE", 1024)),
            watch_interval_s=env_float("RUNLOOM_SSE_WATCH_S", 1.0),
            attach_timeout_s=env_float("RUNLOOM_SSE_ATTACH_TIMEOUT_S", 3.0),
            token_ttl_s=env_float("RUNLOOM_STREAM_TOKEN_TTL_S", 300.0),
            archive=os.environ.get("RUNLOOM_ARCHIVE", "1") != "0",
        )
