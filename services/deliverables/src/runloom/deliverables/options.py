"""Options of the deliverables service, from `RUNLOOM_DELIVERABLES_*` environment variables."""

from __future__ import annotations

from dataclasses import dataclass

from runloom.runtime.config import env_float


@dataclass(frozen=True, kw_only=True)
class Options:
    max_attempts: int = 3
    """Attempts per job (RUNLOOM_DELIVERABLES_MAX_ATTEMPTS); the last failure is final."""
    retry_base_s: float = 5.0
    """First retry delay (RUNLOOM_DELIVERABLES_RETRY_BASE_S); doubles per attempt."""
    retry_max_s: float = 300.0
    """Longest retry delay (RUNLOOM_DELIVERABLES_RETRY_MAX_S)."""
    concurrency: int = 2
    """Jobs rendered at once by one replica (RUNLOOM_DELIVERABLES_CONCURRENCY)."""
    ack_wait_s: float = 6.0
    """How soon a job held by a dead replica is redelivered; live jobs are extended."""
    render_delay_s: float = 0.0
    """Fault-injection knob for tests (RUNLOOM_DELIVERABLES_RENDER_DELAY_S): sleep this long
    before rendering each format, so a test can observe and kill a replica mid-job."""

    @classmethod
    def from_env(cls) -> Options:
        return cls(
            max_attempts=max(1, int(env_float("RUNLOOM_DELIVERABLES_MAX_ATTEMPTS", 3))),
            retry_base_s=env_float("RUNLOOM_DELIVERABLES_RETRY_BASE_S", 5.0),
            retry_max_s=env_float("RUNLOOM_DELIVERABLES_RETRY_MAX_S", 300.0),
            concurrency=max(1, int(env_float("RUNLOOM_DELIVERABLES_CONCURRENCY", 2))),
            render_delay_s=env_float("RUNLOOM_DELIVERABLES_RENDER_DELAY_S", 0.0),
        )

    def retry_delay(self, attempt: int) -> float:
        return float(min(self.retry_base_s * 2 ** max(0, attempt - 1), self.retry_max_s))
