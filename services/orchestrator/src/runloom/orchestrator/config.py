"""Orchestrator options from the environment (beyond the shared `Settings`)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from runloom.runtime.config import env_float


@dataclass(frozen=True, kw_only=True)
class OrchestratorOptions:
    clarification_timeout_s: float = field(
        default_factory=lambda: env_float("RUNLOOM_CLARIFICATION_TIMEOUT_S", 3600.0)
    )
    """How long a run waits for a clarification answer before it fails."""
    deliverables_timeout_s: float = field(
        default_factory=lambda: env_float("RUNLOOM_DELIVERABLES_TIMEOUT_S", 120.0)
    )
    """How long a run waits for its deliverables before completing without them."""
    ack_wait_s: float = field(default_factory=lambda: env_float("RUNLOOM_ORCH_ACK_WAIT_S", 6.0))
    """Ack deadline of a start message: a dead owner's run is redelivered after this."""
    concurrency: int = field(default_factory=lambda: int(env_float("RUNLOOM_ORCH_CONCURRENCY", 8)))
    """Runs one replica works on at once."""
    delta_interval_s: float = field(
        default_factory=lambda: env_float("RUNLOOM_REPORT_DELTA_INTERVAL_S", 0.05)
    )
    """Minimum spacing of message.delta events of one stream (0.05 s: at most 20 per second)."""
    offline_token_delay_s: float = field(
        default_factory=lambda: env_float("RUNLOOM_OFFLINE_TOKEN_DELAY_S", 0.0)
    )
    """Pause per token of the offline provider (to watch or test a slow writer)."""
    search_delay_s: float = field(default_factory=lambda: env_float("RUNLOOM_SEARCH_DELAY_S", 0.0))
    """Extra latency per corpus search (to test cancellation during a search)."""
    sweep_interval_s: float = field(
        default_factory=lambda: env_float("RUNLOOM_CLARIFICATION_SWEEP_S", 1.0)
    )
    """How often a replica looks for paused runs whose clarification deadline passed."""
    default_corpus_tenants: tuple[str, ...] = field(
        default_factory=lambda: tuple(
            t.strip()
            for t in os.environ.get("RUNLOOM_DEFAULT_CORPUS_TENANTS", "").split(",")
            if t.strip()
        )
    )
    """Tenants given the default corpus (the Python docs) when a replica starts (`runloom up`:
    the local tenant `dev`)."""
    dispatch_order: str = field(
        default_factory=lambda: os.environ.get("RUNLOOM_DISPATCH_ORDER", "fair")
    )
    """`fair` (weighted round-robin across tenants) or `fifo` (oldest first, whoever's it is:
    the order before fair dispatch, kept to measure against)."""
    provider_rpm: float = field(default_factory=lambda: env_float("RUNLOOM_PROVIDER_RPM", 0.0))
    """Requests per minute the provider key allows, for all replicas together (0: no limit)."""
    provider_tpm: float = field(default_factory=lambda: env_float("RUNLOOM_PROVIDER_TPM", 0.0))
    """Tokens (prompt + output) per minute the provider key allows, all replicas (0: none)."""
    hits_per_step: int = field(default_factory=lambda: int(env_float("RUNLOOM_HITS_PER_STEP", 5)))
    """Sources a research sub-agent keeps per sub-question."""
