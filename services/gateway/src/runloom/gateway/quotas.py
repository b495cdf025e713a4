"""Quotas per tenant: what one tenant may take of the platform, enforced by every replica.

| quota | default | over it |
|---|---|---|
| `requests_per_second` (and `burst`) | 20/s, burst 40 | 429 `requests` |
| `queued_runs`: runs accepted and not yet started | 500 | 429 `queued_runs` (nothing stored) |
| `sse_streams`: event streams open at once | 50 | 429 `sse_streams` |
| `concurrent_runs`: runs working at once | 8 | the run waits in its tenant's queue |
| `weight`: the tenant's share when runs wait | 1 | - |

Values come from `tenant_quotas` (set with `python -m runloom.admin quota`): the tenant's row,
else the platform row `'*'`, else the default above. A replica reads them at most every
`CACHE_S` seconds, so a change applies everywhere within that.

The request rate is a token bucket per tenant in PostgreSQL (`runtime.buckets`): one atomic
statement per request, so every replica draws from the same bucket and none can overdraw it.
Open streams are leases in `stream_leases` counted under a per-tenant transaction lock.
`concurrent_runs` and `weight` travel with the start command (`StartRun.dispatch`) to the
orchestrator, which queues and dispatches runs (it reads no gateway table).

`queued_runs` is checked and held atomically: under a per-tenant transaction lock, the runs
waiting plus the admissions still being created (`run_admissions`, one row per POST between
the check and its run's row) are counted, and an admission is recorded in the same
transaction. Concurrent POSTs at the limit cannot overshoot it; an admission lapses after
`ADMISSION_S` if its gateway died halfway.

Every answer to an authenticated request carries the IETF `RateLimit-Policy` / `RateLimit`
fields of the tenant's request rate (draft-ietf-httpapi-ratelimit-headers:
`"requests";q=<burst>;w=<seconds to refill it>` and `"requests";r=<remaining>;t=<seconds until
full>`), so a client paces itself before it is refused. A refusal is a 429
`application/problem+json` naming the quota (`quota`), its limit and when to retry
(`retry_after_s`), with `Retry-After` and the same fields for the quota that refused
(`t` = seconds until a retry can pass).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import asyncpg
from runloom.contracts.commands import DispatchPolicy
from runloom.gateway import metrics
from runloom.gateway.problems import Problem
from runloom.runtime import buckets

PLATFORM = "*"
"""The `tenant_quotas` row holding the platform's defaults."""
CACHE_S = 2.0
"""How long a replica keeps a tenant's quotas before reading them again."""
CACHE_MAX = 10_000
"""How many tenants' quotas a replica keeps (least recently used are forgotten)."""
ADMISSION_S = 60.0
"""How long a POST's admission holds a place in the queue before its run's row is in."""
LEASE_S = 60.0
"""An open stream's lease; renewed every third of it while the stream is open."""
RUN_RETRY_S = 5
"""Retry-After when the queue is full: runs leave it as they start, which takes seconds."""
STREAM_RETRY_S = 5


@dataclass(frozen=True)
class Limits:
    requests_per_second: float = 20.0
    burst: float = 40.0
    concurrent_runs: int = 8
    queued_runs: int = 500
    sse_streams: int = 50
    weight: float = 1.0

    def dispatch(self) -> DispatchPolicy:
        return DispatchPolicy(concurrent_runs=self.concurrent_runs, weight=self.weight)


DEFAULTS = Limits()
NAMES = tuple(f.name for f in fields(Limits))


_cache: OrderedDict[str, tuple[float, Limits]] = OrderedDict()
"""tenant -> (read at, quotas): at most `CACHE_MAX` tenants, each at most `CACHE_S` old."""


# -- reading and setting (the admin command uses these too) ----------------------------------


def _merge(base: Limits, row: asyncpg.Record | None) -> Limits:
    if row is None:
        return base
    return replace(base, **{n: row[n] for n in NAMES if row[n] is not None})


async def read_limits(db: asyncpg.Pool | asyncpg.Connection, tenant_id: str) -> Limits:
    rows = {
        r["tenant_id"]: r
        for r in await db.fetch(
            f"SELECT tenant_id, {', '.join(NAMES)} FROM tenant_quotas WHERE tenant_id IN ($1, $2)",
            tenant_id,
            PLATFORM,
        )
    }
    return _merge(_merge(DEFAULTS, rows.get(PLATFORM)), rows.get(tenant_id))


async def limits(pool: asyncpg.Pool, tenant_id: str) -> Limits:
    """The tenant's quotas as this replica last read them (at most `CACHE_S` old)."""
    now = time.monotonic()
    hit = _cache.get(tenant_id)
    if hit is not None and now - hit[0] < CACHE_S:
        _cache.move_to_end(tenant_id)
        return hit[1]
    found = await read_limits(pool, tenant_id)
    _cache[tenant_id] = (now, found)
    _cache.move_to_end(tenant_id)
    while len(_cache) > CACHE_MAX:
        _cache.popitem(last=False)
    return found


_FLOORS = {"burst": 1, "concurrent_runs": 1}
_FLOOR_WORDS = {
    "burst": "at least 1",
    "concurrent_runs": "at least 1",
    "queued_runs": "0 or more",
    "sse_streams": "0 or more",
}


def parse(assignments: list[str]) -> dict[str, float | int | None]:
    """`name=value` pairs (`value` may be `default` to drop an override); ValueError names
    what is wrong."""
    out: dict[str, float | int | None] = {}
    for item in assignments:
        name, sep, text = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in NAMES:
            raise ValueError(f"{item!r}: write NAME=VALUE with NAME one of {', '.join(NAMES)}")
        if text.strip() == "default":
            out[name] = None
            continue
        kind = type(getattr(DEFAULTS, name))
        try:
            value = kind(text)
        except ValueError:
            raise ValueError(f"{item!r}: {name} takes a {kind.__name__}") from None
        floor = _FLOORS.get(name, 0)
        if (
            not math.isfinite(value)
            or value < floor
            or (floor == 0 and kind is float and value == 0)
        ):
            raise ValueError(f"{item!r}: {name} must be {_FLOOR_WORDS.get(name, 'above 0')}")
        out[name] = value
    return out


async def set_limits(
    db: asyncpg.Pool | asyncpg.Connection, tenant_id: str, values: dict[str, float | int | None]
) -> None:
    """Store overrides for `tenant_id` (or the platform, `PLATFORM`); None drops one."""
    if not values:
        return
    cols = list(values)
    await db.execute(
        f"INSERT INTO tenant_quotas(tenant_id, {', '.join(cols)})"
        f" VALUES ($1, {', '.join(f'${i + 2}' for i in range(len(cols)))})"
        " ON CONFLICT (tenant_id) DO UPDATE SET "
        + ", ".join(f"{c}=EXCLUDED.{c}" for c in cols)
        + ", updated_at=now()",
        tenant_id,
        *values.values(),
    )


async def overrides(db: asyncpg.Pool | asyncpg.Connection, tenant_id: str) -> dict[str, Any]:
    row = await db.fetchrow(
        f"SELECT {', '.join(NAMES)} FROM tenant_quotas WHERE tenant_id=$1", tenant_id
    )
    return {} if row is None else {n: row[n] for n in NAMES if row[n] is not None}


def describe(found: Limits) -> dict[str, Any]:
    return asdict(found)


# -- refusing ----------------------------------------------------------------------------------


def over_quota(
    tenant_id: str,
    quota: str,
    limit: float,
    retry_after_s: int,
    detail: str,
    *,
    window_s: float | None = None,
    remaining: float = 0,
) -> Problem:
    """A 429 naming the quota, with Retry-After and the RateLimit fields."""
    metrics.QUOTA_REFUSED.labels(tenant_id, quota).inc()
    problem = Problem(
        429,
        "Too Many Requests",
        f"{detail} Retry in {retry_after_s} s.",
        type=f"https://runloom.dev/problems/quota/{quota}",
        quota=quota,
        limit=limit,
        retry_after_s=retry_after_s,
    )
    problem.headers["Retry-After"] = str(retry_after_s)
    problem.headers.update(
        rate_limit_fields(quota, limit, retry_after_s, window_s=window_s, remaining=remaining)
    )
    return problem


def rate_limit_fields(
    quota: str, limit: float, reset_s: float, *, window_s: float | None, remaining: float
) -> dict[str, str]:
    """The `RateLimit-Policy` and `RateLimit` fields of one quota."""
    policy = f'"{quota}";q={int(limit)}'
    if window_s is not None:
        policy += f";w={max(1, math.ceil(window_s))}"
    return {
        "RateLimit-Policy": policy,
        "RateLimit": f'"{quota}";r={int(remaining)};t={math.ceil(reset_s)}',
    }


async def take_request(pool: asyncpg.Pool, tenant_id: str) -> dict[str, str]:
    """One API request of the tenant; 429 when its request bucket is empty. Returns the
    RateLimit fields the answer carries (what is left of the bucket, when it is full again)."""
    found = await limits(pool, tenant_id)
    burst = max(found.burst, 1.0)
    try:
        taken = await buckets.take(
            pool, "request_buckets", tenant_id, rate=found.requests_per_second, burst=burst
        )
    except asyncpg.exceptions.DiskFullError:
        return {}  # a full database still serves reads: the rate goes unmetered meanwhile
    window_s = burst / found.requests_per_second
    if not taken.ok:
        raise over_quota(
            tenant_id,
            "requests",
            found.burst,
            taken.retry_after_s,
            f"This tenant may send {found.requests_per_second:g} requests a second "
            f"(bursts of {found.burst:g}) and has used them up.",
            window_s=window_s,
            remaining=taken.remaining,
        )
    return rate_limit_fields(
        "requests", burst, taken.reset_s, window_s=window_s, remaining=taken.remaining
    )


async def admit_run(
    pool: asyncpg.Pool, tenant_id: str, run_id: str, idempotency_key: str | None
) -> Limits:
    """Before a new run is stored: 429 if the tenant already has `queued_runs` runs waiting
    to start or being created (a retry of a request already accepted is answered as before);
    else a place is held for `run_id` until its row is in (`admitted`). Returns the tenant's
    quotas: the start command carries its dispatch policy."""
    found = await limits(pool, tenant_id)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('runs:' || $1))", tenant_id)
        waiting = await conn.fetchval(
            "SELECT (SELECT count(*) FROM runs WHERE tenant_id=$1"
            "        AND status IN ('created', 'queued'))"
            " + (SELECT count(*) FROM run_admissions a WHERE a.tenant_id=$1"
            "    AND a.expires_at > now() AND NOT EXISTS (SELECT 1 FROM runs r"
            "    WHERE r.id = a.run_id))",
            tenant_id,
        )
        if waiting < found.queued_runs:
            await conn.execute(
                "DELETE FROM run_admissions WHERE tenant_id=$1 AND expires_at <= now()", tenant_id
            )
            await conn.execute(
                "INSERT INTO run_admissions(run_id, tenant_id, expires_at)"
                " VALUES ($1, $2, now() + make_interval(secs => $3))",
                run_id,
                tenant_id,
                ADMISSION_S,
            )
            return found
        replayed = idempotency_key is not None and await conn.fetchval(
            "SELECT 1 FROM idempotency_keys WHERE tenant_id=$1 AND key=$2",
            tenant_id,
            idempotency_key,
        )
        if not replayed:
            raise over_quota(
                tenant_id,
                "queued_runs",
                found.queued_runs,
                RUN_RETRY_S,
                f"This tenant already has {waiting} runs waiting to start (its limit is "
                f"{found.queued_runs}); nothing was stored. Runs leave the queue as they start "
                f"({found.concurrent_runs} at a time for this tenant).",
            )
    return found


async def admitted(pool: asyncpg.Pool, run_id: str) -> None:
    """The POST that held a place for `run_id` is over (its row is in, or it failed)."""
    with contextlib.suppress(Exception):  # else it lapses after ADMISSION_S
        await pool.execute("DELETE FROM run_admissions WHERE run_id=$1", run_id)


# -- open streams ------------------------------------------------------------------------------


async def open_stream(pool: asyncpg.Pool, tenant_id: str) -> str:
    """A lease for one more open event stream of the tenant; 429 at its `sse_streams`."""
    found = await limits(pool, tenant_id)
    lease = secrets.token_hex(8)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('streams:' || $1))", tenant_id)
        open_now = await conn.fetchval(
            "SELECT count(*) FROM stream_leases WHERE tenant_id=$1 AND expires_at > now()",
            tenant_id,
        )
        if open_now >= found.sse_streams:
            raise over_quota(
                tenant_id,
                "sse_streams",
                found.sse_streams,
                STREAM_RETRY_S,
                f"This tenant has {open_now} event streams open (its limit is "
                f"{found.sse_streams}). Close one, or follow several runs from one page.",
            )
        await conn.execute(
            "DELETE FROM stream_leases WHERE tenant_id=$1 AND expires_at <= now()", tenant_id
        )
        await conn.execute(
            "INSERT INTO stream_leases(lease_id, tenant_id, expires_at)"
            " VALUES ($1, $2, now() + make_interval(secs => $3))",
            lease,
            tenant_id,
            LEASE_S,
        )
    return lease


class Leased:
    """`body`, its lease renewed while it streams (with the process's others, `_Renewals`) and
    ended when it ends, is cut, or is closed, even before its first chunk (a client gone as
    soon as it had the headers: a generator that never started would never run a `finally`)."""

    __slots__ = ("body", "ended", "lease", "pool", "renewals")

    def __init__(self, pool: asyncpg.Pool, lease: str, body: AsyncIterator[bytes]) -> None:
        self.pool = pool
        self.lease = lease
        self.body = body
        self.ended = False
        self.renewals = _Renewals.of(pool)
        self.renewals.add(lease)

    def __aiter__(self) -> Leased:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self.body.__anext__()
        except BaseException:
            self.release()
            raise

    async def aclose(self) -> None:
        self.release()
        await self.body.aclose()  # type: ignore[attr-defined]

    def release(self) -> None:
        """Free the stream's place (once), without holding up the caller: the stream ended,
        was cut or cancelled, or its client went away (`_sse.SSEResponse`)."""
        if self.ended:
            return
        self.ended = True
        self.renewals.discard(self.lease)
        task = asyncio.get_running_loop().create_task(end_stream(self.pool, self.lease))
        _ending.add(task)
        task.add_done_callback(_ending.discard)


class _Renewals:
    """The open stream leases of this process (of one pool), renewed together every third of
    `LEASE_S` by one statement: a stream's own task never waits on the database to keep
    streaming. (One UPDATE per stream, run from the stream when a chunk went by, was 500
    statements a second at 10,000 streams and held their writers behind the pool.)"""

    _by_pool: dict[asyncpg.Pool, _Renewals] = {}

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.leases: set[str] = set()
        self.task: asyncio.Task[None] | None = None

    @classmethod
    def of(cls, pool: asyncpg.Pool) -> _Renewals:
        found = cls._by_pool.get(pool)
        if found is None:
            found = cls._by_pool[pool] = cls(pool)
        return found

    def add(self, lease: str) -> None:
        self.leases.add(lease)
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._renew())

    def discard(self, lease: str) -> None:
        self.leases.discard(lease)
        if not self.leases:  # nothing left to renew: the next stream starts afresh
            if self._by_pool.get(self.pool) is self:
                del self._by_pool[self.pool]
            if self.task is not None:
                self.task.cancel()

    async def _renew(self) -> None:
        while self.leases:
            await asyncio.sleep(LEASE_S / 3)
            with contextlib.suppress(Exception):
                await self.pool.execute(
                    "UPDATE stream_leases SET expires_at = now() + make_interval(secs => $2)"
                    " WHERE lease_id = ANY($1::text[])",
                    list(self.leases),
                    LEASE_S,
                )


_ending: set[asyncio.Task[None]] = set()


async def end_stream(pool: asyncpg.Pool, lease: str) -> None:
    with contextlib.suppress(Exception):
        await pool.execute("DELETE FROM stream_leases WHERE lease_id=$1", lease)
