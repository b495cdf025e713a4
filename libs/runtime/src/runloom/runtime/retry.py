"""Pauses between attempts: the one schedule every retry loop of the project takes.

A loop keeps its own rules (which errors it retries, its deadline, what it checks before
trying again); `Backoff` says only how long to wait before the next try.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class Backoff:
    """How long to pause before retry `n` (0 before the first retry, 1 before the second …)."""

    first_s: float
    """The first pause."""
    max_s: float
    """No pause is longer than this (before jitter)."""
    factor: float = 2.0
    """Each pause is this many times the one before (1: no exponential growth)."""
    step_s: float = 0.0
    """Added to each pause over the one before (linear growth)."""
    jitter: float = 0.0
    """Spread as a fraction of the pause: 0.2 waits 80 % to 120 % of it, 1 from 0 to twice it,
    so that writers who failed together do not retry together."""

    def delay(self, n: int) -> float:
        """The pause before retry `n`, in seconds."""
        try:
            pause = min((self.first_s + self.step_s * n) * self.factor**n, self.max_s)
        except OverflowError:
            pause = self.max_s
        if self.jitter:
            pause *= random.uniform(1.0 - self.jitter, 1.0 + self.jitter)
        return pause

    async def sleep(self, n: int) -> None:
        """Pause before retry `n`."""
        await asyncio.sleep(self.delay(n))
