"""Provider limits shared by every orchestrator replica: requests and tokens per minute per
provider key, so N replicas together stay within what the key allows.

Before each provider call a writer takes one request and the call's token estimate (prompt
plus the most it may write) from two buckets per key in PostgreSQL (`runtime.buckets`: one
atomic statement each, shared by all replicas). When either is short, the run says so
(`rate_limited`, with the wait: the console and the CLI show it) and waits, then asks again;
it never sends a call the provider would answer with 429. Unset limits (0) take nothing.

The key is the provider's name and a hash of its API key (never the key itself), so two keys
of one provider have their own limits.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass

import asyncpg
from runloom.orchestrator.providers.base import RateLimitHook
from runloom.runtime import buckets

TABLE = "provider_buckets"


@dataclass(frozen=True)
class ProviderLimits:
    requests_per_minute: float = 0.0
    tokens_per_minute: float = 0.0

    @property
    def active(self) -> bool:
        return self.requests_per_minute > 0 or self.tokens_per_minute > 0


def key_of(provider: str, api_key: str) -> str:
    digest = hashlib.sha256(api_key.encode()).hexdigest()[:12] if api_key else "nokey"
    return f"{provider}:{digest}"


async def acquire(
    pool: asyncpg.Pool,
    key: str,
    limits: ProviderLimits,
    tokens: int,
    on_wait: RateLimitHook,
) -> int:
    """Wait until one request and `tokens` tokens may be spent on `key`; returns how many
    times the run had to wait (each shown with `on_wait(wait_s, attempt)`)."""
    if not limits.active:
        return 0
    waits = 0
    while True:
        wait = await _take(pool, key, limits, tokens)
        if wait <= 0:
            return waits
        waits += 1
        await on_wait(wait, waits)
        await asyncio.sleep(wait)


async def _take(pool: asyncpg.Pool, key: str, limits: ProviderLimits, tokens: int) -> float:
    """Seconds to wait (0: taken). Both or neither: a request taken for a call whose tokens
    are short is given back."""
    rpm, tpm = limits.requests_per_minute, limits.tokens_per_minute
    cost = float(min(tokens, tpm)) if tpm > 0 else 0.0  # a call bigger than a minute: a minute
    if rpm > 0:
        asked = await buckets.take(pool, TABLE, f"{key}:requests", rate=rpm / 60, burst=rpm)
        if not asked.ok:
            return asked.wait_s
    if tpm > 0:
        spent = await buckets.take(
            pool, TABLE, f"{key}:tokens", rate=tpm / 60, burst=tpm, cost=cost
        )
        if not spent.ok:
            if rpm > 0:
                await buckets.take(
                    pool, TABLE, f"{key}:requests", rate=rpm / 60, burst=rpm, cost=-1.0
                )
            return spent.wait_s
    return 0.0
