"""The lifecycle service: erasure and retention, holding the purge rights nobody else needs.

Serves (request/reply, queue group `lifecycle`): `lifecycle.erase` (the gateway asks, after
checking the tenant owns each run and each has ended; `eraser.Eraser`). Runs: the retention
sweeper (`retention.run`). Asks: `erase.<service>` of each service, `retention.due` of the
gateway. Writes: the `erasures` bucket (each job's record); purges `run.<id>.events` of erased
runs; deletes the messages of COMMANDS, JOBS and DEAD_LETTERS naming them. No table, no
database connection; it imports no other service.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from runloom.contracts.operations import LIFECYCLE_ERASE
from runloom.lifecycle import retention
from runloom.lifecycle.access import QUEUE
from runloom.lifecycle.eraser import Eraser
from runloom.runtime.config import Settings
from runloom.runtime.responder import Responder, Route
from runloom.runtime.service import BusContext, serve_bus

log = logging.getLogger(__name__)


async def main(ctx: BusContext) -> None:
    eraser = Eraser(ctx.nc, ctx.js)
    responder = Responder(ctx.nc, ctx.js, QUEUE, [Route(LIFECYCLE_ERASE, eraser.handle)])
    await responder.start()
    sweeper = asyncio.create_task(
        retention.run(ctx.nc, ctx.js, eraser, ctx.producer, ctx.stop), name="retention"
    )
    ctx.ready()
    log.info(
        "lifecycle ready: %s in queue group %r, retention every %g s",
        LIFECYCLE_ERASE.subject,
        QUEUE,
        retention.interval_s(),
    )
    try:
        await ctx.stop.wait()
    finally:
        # Jobs stop first (each resumes from its record); then the responder answers what it
        # still holds and lets go of its subscription.
        sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await sweeper
        await eraser.close()
        await responder.stop()


async def run(settings: Settings) -> None:
    await serve_bus("lifecycle", settings, main)
