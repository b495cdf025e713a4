"""Token buckets in PostgreSQL: replicas taking at once never overdraw the bucket."""

from __future__ import annotations

import asyncio
import uuid

from runloom.runtime import buckets, db


async def test_two_pools_taking_at_once_share_one_bucket(settings, pool) -> None:
    table = f"test_buckets_{uuid.uuid4().hex[:8]}"
    await pool.execute(
        f"CREATE TABLE {table} (key text PRIMARY KEY, tokens double precision NOT NULL,"
        " at timestamptz NOT NULL, ok boolean NOT NULL)"
    )
    other = await db.create_pool(settings.effective_database_url, max_size=10)
    try:
        answers = await asyncio.gather(
            *(buckets.take(p, table, "k", rate=0.001, burst=7) for p in [pool, other] * 20)
        )
        assert sum(a.ok for a in answers) == 7
        refused = [a for a in answers if not a.ok]
        assert all(a.retry_after_s >= 900 for a in refused)  # one token per 1000 s
        assert all(a.remaining < 1 for a in refused)
        # Giving one back (a negative cost) lets exactly one more take through.
        await buckets.take(pool, table, "k", rate=0.001, burst=7, cost=-1)
        assert (await buckets.take(other, table, "k", rate=0.001, burst=7)).ok
        assert not (await buckets.take(other, table, "k", rate=0.001, burst=7)).ok
    finally:
        await other.close()
        await pool.execute(f"DROP TABLE {table}")
