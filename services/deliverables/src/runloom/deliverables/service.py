"""The deliverables service (one replica): renders the deliverable jobs of runs.

Consumes: `job.deliverable.>` (DeliverableJob) from the JOBS work queue, durable
`deliverables` shared by every replica, one job per lock, handled by `jobs.JobRunner`.
Serves (request/reply, queue group `deliverables`): `deliverables.run` and
`deliverables.artifact` (`queries.responder`), what the gateway cannot read from events.
Publishes: `deliverable.progress|ready|failed` on the job's run (RUN_EVENTS), artifacts into
the `artifacts` object store.
"""

from __future__ import annotations

import logging

from runloom.contracts import subjects
from runloom.contracts.commands import DeliverableJob
from runloom.deliverables.access import DURABLE, FILTER
from runloom.deliverables.jobs import LOCK_WAIT_S, JobRunner
from runloom.deliverables.options import Options
from runloom.deliverables.queries import Queries, responder
from runloom.deliverables.store import ArtifactStore
from runloom.runtime import consumer
from runloom.runtime.config import Settings
from runloom.runtime.consumer import Consumer, Lock
from runloom.runtime.eventlog import EventLog
from runloom.runtime.metrics import consumer_gauges
from runloom.runtime.service import ServiceContext, serve

log = logging.getLogger("runloom.deliverables")


def jobs(runner: JobRunner, options: Options) -> Consumer[DeliverableJob]:
    """Deliverable jobs: each rendered under its lock (another replica's attempt is waited
    for), its message kept alive while rendering; retries are naks with the job's backoff."""
    return Consumer(
        stream=subjects.JOBS_STREAM,
        durable=DURABLE,
        filter_subject=FILTER,
        decodes=DeliverableJob,
        handler=runner.handle,
        ack_wait_s=options.ack_wait_s,
        concurrency=options.concurrency,
        batch=options.concurrency,
        keep_alive=True,
        lock=Lock(key=lambda job: f"job:{job.job_id}", wait_s=LOCK_WAIT_S),
    )


async def main(ctx: ServiceContext) -> None:
    options = Options.from_env()
    events = EventLog(ctx.js, ctx.producer)
    store = await ArtifactStore.open(ctx.js)
    runner = JobRunner(pool=ctx.pool, events=events, store=store, options=options)
    if ctx.management is not None:
        ctx.management.add_scrape_hook(consumer_gauges(ctx.js, subjects.JOBS_STREAM, DURABLE))
    log.info(
        "consuming %s (max %d attempts, concurrency %d)",
        FILTER,
        options.max_attempts,
        options.concurrency,
    )
    answers = responder(ctx.nc, ctx.js, Queries(ctx.pool, store))
    await answers.start()
    declared = jobs(runner, options)
    try:
        await consumer.serve(
            declared, ctx.js, ctx.stop, events=events, lock_pool=ctx.pool, ready=ctx.ready
        )
    finally:
        await answers.stop()


async def run(settings: Settings) -> None:
    await serve("deliverables", settings, main)
