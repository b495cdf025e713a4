"""The deliverables service (one replica): renders the deliverable jobs of runs.

Consumes `job.deliverable.>` from the JOBS work-queue stream with the durable pull consumer
`deliverables`, shared by every replica; each job is handled by `jobs.JobRunner`.
"""

from __future__ import annotations

import logging

from nats.js import api as js_api
from runloom.contracts import subjects
from runloom.deliverables.jobs import JobRunner
from runloom.deliverables.options import Options
from runloom.deliverables.store import ArtifactStore
from runloom.runtime import bus
from runloom.runtime.config import Settings
from runloom.runtime.eventlog import EventLog
from runloom.runtime.service import ServiceContext, serve

log = logging.getLogger("runloom.deliverables")

DURABLE = "deliverables"
FILTER = subjects.DELIVERABLE_JOBS


async def ensure_consumer(ctx: ServiceContext, options: Options) -> None:
    """Create the shared durable consumer, or bring an existing one to this ack deadline (a
    consumer keeps the config it was created with; create-or-update applies the new one)."""
    config = js_api.ConsumerConfig(
        durable_name=DURABLE,
        ack_policy=js_api.AckPolicy.EXPLICIT,
        ack_wait=options.ack_wait_s,
        max_deliver=-1,
        filter_subject=FILTER,
        max_ack_pending=1000,
    )
    try:
        await ctx.js.add_consumer(subjects.JOBS_STREAM, config)
    except Exception as exc:  # keep serving with the consumer as it is
        log.warning("could not update consumer %s: %s", DURABLE, exc)


async def main(ctx: ServiceContext) -> None:
    options = Options.from_env()
    await ensure_consumer(ctx, options)
    runner = JobRunner(
        pool=ctx.pool,
        events=EventLog(ctx.js, ctx.producer),
        store=await ArtifactStore.open(ctx.js),
        options=options,
    )
    log.info(
        "consuming %s (max %d attempts, concurrency %d)",
        FILTER,
        options.max_attempts,
        options.concurrency,
    )
    await bus.run_pull_consumer(
        ctx.js,
        stream=subjects.JOBS_STREAM,
        durable=DURABLE,
        filter_subject=FILTER,
        handler=runner.handle,
        stop=ctx.stop,
        ack_wait=options.ack_wait_s,
        concurrency=options.concurrency,
        batch=options.concurrency,
    )


async def run(settings: Settings) -> None:
    await serve("deliverables", settings, main)
