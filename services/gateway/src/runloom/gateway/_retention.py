"""The retention job: a tenant's ended runs older than its policy are erased everywhere.

A tenant's policy is a row of `tenant_retention` (`keep_days`; no row or NULL: keep every run,
the default), set by the administrator (`python -m runloom.admin tenant retention ID DAYS`)
and shown to the tenant by `GET /v1/retention`. Every `RUNLOOM_RETENTION_INTERVAL_S` (default
an hour) one gateway replica (a PostgreSQL advisory lock) picks, per tenant, up to `BATCH` runs
that ended more than `keep_days` ago and erases them as one erasure job
(`runloom.runtime.erasure`: stream subjects, archive, read models, checkpoints, deliverables
and artifacts, ledger rows; the month's spend stays in billing's aggregate). A job cut short
is resumed on the next sweep (the same runs give the same job), and so is any erasure whose
runner went away (a gateway that died in the middle of `DELETE /v1/runs/{id}`, an admin
command killed): a `running` record untouched for `STALE_S`.
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from runloom.gateway.store import erasure as store
from runloom.runtime import erasure
from runloom.runtime.config import env_float

log = logging.getLogger(__name__)

LOCK = 0x52544E31  # "RTN1"
BATCH = 100
STALE_S = 300.0


def interval_s() -> float:
    return env_float("RUNLOOM_RETENTION_INTERVAL_S", 3600.0)


async def sweep(nc: NATS, js: JetStreamContext, pool: asyncpg.Pool) -> dict[str, int]:
    """Erase what is due, if no other replica is sweeping; what was removed, summed."""
    removed: dict[str, int] = {}
    async with pool.acquire() as conn:
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", LOCK):
            return removed
        try:
            for job in await erasure.unfinished(js, STALE_S):
                try:
                    await erasure.Erasure(nc, js, job).run()
                    log.info("resumed the erasure %s", job.erasure_id)
                except erasure.ErasureError as exc:
                    log.warning("erasure %s still unfinished: %s", job.erasure_id, exc)
            for tenant, runs in (await store.due(pool, BATCH)).items():
                job = await erasure.Erasure.open(nc, js, tenant, run_ids=runs)
                done = await job.run()
                log.info("retention erased %d run(s) of %s: %s", len(runs), tenant, done.removed)
                for key, n in done.removed.items():
                    removed[key] = removed.get(key, 0) + n
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", LOCK)
    return removed


async def run(nc: NATS, js: JetStreamContext, pool: asyncpg.Pool) -> None:
    """Sweep every `interval_s()` until cancelled; a failed sweep is retried next time."""
    while True:
        await asyncio.sleep(interval_s())
        try:
            await sweep(nc, js, pool)
        except Exception:
            log.exception("retention sweep failed; the next one resumes it")
