"""Token buckets shared by every replica: one row per key, taken from in one atomic statement.

A bucket holds up to `burst` tokens and refills at `rate` tokens a second. `take` refills the
row by the time elapsed since it was last touched, takes `cost` tokens if that many are
there, and says whether it did, all in one `INSERT ... ON CONFLICT DO UPDATE`: PostgreSQL
locks the row for the statement, so any number of replicas taking from the same key at once
are serialised by the database and never overdraw it. No read-modify-write loop, no retry.

Each service keeps its buckets in a table of its own schema with the shape below (the
gateway: request rates per tenant; the orchestrator: provider requests and tokens per key):

    CREATE TABLE <table> (
        key     text PRIMARY KEY,
        tokens  double precision NOT NULL,
        at      timestamptz NOT NULL,
        ok      boolean NOT NULL
    );
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import asyncpg

_TABLE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


@dataclass(frozen=True)
class Taken:
    ok: bool
    """The tokens were taken."""
    remaining: float
    """Tokens left in the bucket after this take (whole tokens a client may still spend)."""
    wait_s: float
    """When refused: seconds until `cost` tokens are there (0 when taken)."""
    reset_s: float
    """Seconds until the bucket is full again."""

    @property
    def retry_after_s(self) -> int:
        """`wait_s` as whole seconds for Retry-After (at least 1 when refused)."""
        return max(1, math.ceil(self.wait_s)) if not self.ok else 0


def _sql(table: str) -> str:
    if not _TABLE.match(table):
        raise ValueError(f"{table!r} is not a table name")
    level = (
        "LEAST($3::float8, b.tokens + GREATEST(0, EXTRACT(EPOCH FROM clock_timestamp() - b.at))"
        " * $2::float8)"
    )
    return (
        f"INSERT INTO {table} AS b (key, tokens, at, ok)"
        " VALUES ($1, CASE WHEN $4::float8 <= $3::float8 THEN $3 - $4 ELSE $3 END,"
        " clock_timestamp(), $4 <= $3)"
        " ON CONFLICT (key) DO UPDATE SET"
        f" tokens = {level} - CASE WHEN {level} >= $4 THEN $4 ELSE 0 END,"
        f" ok = {level} >= $4, at = clock_timestamp()"
        " RETURNING tokens, ok"
    )


async def take(
    db: asyncpg.Pool | asyncpg.Connection,
    table: str,
    key: str,
    *,
    rate: float,
    burst: float,
    cost: float = 1.0,
) -> Taken:
    """Take `cost` tokens from the bucket `key` of `table` (refilled at `rate`/s, up to
    `burst`). A cost above `burst` can never be taken: it is refused with the wait for a
    full bucket, and the caller should lower its cost or raise the burst."""
    row = await db.fetchrow(_sql(table), key, float(rate), float(burst), float(cost))
    assert row is not None
    tokens, ok = float(row["tokens"]), bool(row["ok"])
    per_s = max(rate, 1e-9)
    wait = 0.0 if ok else max(0.0, (min(cost, burst) - tokens) / per_s)
    return Taken(
        ok=ok, remaining=max(0.0, tokens), wait_s=wait, reset_s=max(0.0, (burst - tokens) / per_s)
    )
