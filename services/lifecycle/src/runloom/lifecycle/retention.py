"""The retention sweeper: a tenant's ended runs older than its policy are erased everywhere.

A tenant's policy is the gateway's (`tenant_retention`, set by `python -m runloom.admin tenant
retention ID DAYS`, shown by `GET /v1/retention`). Every `RUNLOOM_RETENTION_INTERVAL_S`
(default an hour) one lifecycle replica (the lease `retention` in the `erasures` bucket,
renewed before each job) asks
the gateway which runs are due (`retention.due`: per tenant, up to `BATCH` runs that ended
more than `keep_days` ago) and erases each tenant's as one erasure job (stream subjects,
archive, read models, checkpoints, deliverables and artifacts, ledger rows; the month's spend
stays in billing's aggregate). A job cut short is resumed on the next sweep (the same runs
give the same job), and so is any erasure whose runner went away (a lifecycle replica that
died mid-way, an admin command killed): a `running` record untouched for `STALE_S`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from runloom.contracts.commands import RetentionDueRequest
from runloom.contracts.operations import RETENTION_DUE
from runloom.lifecycle import metrics
from runloom.lifecycle.eraser import Eraser
from runloom.runtime import erasure
from runloom.runtime.config import env_float
from runloom.runtime.request import ask

log = logging.getLogger(__name__)

LEASE = "retention"
BATCH = 100
STALE_S = 300.0


def interval_s() -> float:
    return env_float("RUNLOOM_RETENTION_INTERVAL_S", 3600.0)


async def sweep(nc: NATS, js: JetStreamContext, eraser: Eraser, holder: str) -> dict[str, int]:
    """Erase what is due, if no other replica is sweeping; what was removed, summed.

    The lease lasts `STALE_S` and is renewed before each job, so a replica that dies mid-sweep
    holds up the others for minutes, not until its next turn."""
    removed: dict[str, int] = {}
    if not await erasure.take_lease(js, LEASE, holder, ttl_s=STALE_S):
        metrics.SWEEPS.labels("skipped").inc()
        return removed
    try:
        for job in await erasure.unfinished(js, STALE_S):
            if not await erasure.take_lease(js, LEASE, holder, ttl_s=STALE_S):
                return removed  # another replica took over: it goes on
            try:
                await eraser.resume(job)
                log.info("resumed the erasure %s", job.erasure_id)
            except erasure.ErasureError as exc:
                log.warning("erasure %s still unfinished: %s", job.erasure_id, exc)
        due = await ask(nc, RETENTION_DUE, RetentionDueRequest(batch=BATCH))
        for tenant, runs in ((d.tenant_id, d.run_ids) for d in due.due):
            if not await erasure.take_lease(js, LEASE, holder, ttl_s=STALE_S):
                return removed
            try:
                done = await eraser.erase_runs(tenant, sorted(runs), "retention")
            except erasure.ErasureError as exc:
                log.warning("retention of %s unfinished (the next sweep resumes): %s", tenant, exc)
                continue
            log.info("retention erased %d run(s) of %s: %s", len(runs), tenant, done.removed)
            for key, n in done.removed.items():
                removed[key] = removed.get(key, 0) + n
    finally:
        await erasure.release_lease(js, LEASE, holder)
    metrics.SWEEPS.labels("done").inc()
    metrics.LAST_SWEEP.set(time.time())
    return removed


async def run(
    nc: NATS, js: JetStreamContext, eraser: Eraser, holder: str, stop: asyncio.Event
) -> None:
    """Sweep every `interval_s()` until `stop`; a failed sweep is retried next time."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval_s())
        if stop.is_set():
            return
        try:
            await sweep(nc, js, eraser, holder)
        except Exception:
            metrics.SWEEPS.labels("failed").inc()
            log.exception("retention sweep failed; the next one resumes it")
