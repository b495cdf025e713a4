"""Runs erasure jobs (`runloom.runtime.erasure`) for the gateway's requests and the sweeper.

A job is run by one task per replica at a time: a second request for the same runs (the
tenant sending DELETE again while the first goes on) waits for the same task rather than
running every step twice. The task goes on if the asker stops waiting; asked again later,
the job answers from where it got (done: it removes nothing more).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any, Literal

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from runloom.contracts.commands import EraseRunsRequest, ErasureReply
from runloom.lifecycle import metrics
from runloom.runtime import erasure

log = logging.getLogger(__name__)

Origin = Literal["request", "retention", "resumed"]


class Eraser:
    def __init__(self, nc: NATS, js: JetStreamContext) -> None:
        self.nc = nc
        self.js = js
        self.running: dict[str, asyncio.Task[erasure.Job]] = {}

    async def handle(self, req: EraseRunsRequest) -> ErasureReply:
        """`lifecycle.erase`: the gateway's request, answered once the job ends or stops."""
        runs = sorted(set(req.run_ids))
        key = erasure.erasure_id(req.tenant_id, runs)
        if not runs:
            return ErasureReply(erasure_id=key, status="unfinished", detail="no run named")
        try:
            job = await self.erase_runs(req.tenant_id, runs, "request")
        except erasure.ErasureError as exc:
            return ErasureReply(erasure_id=key, status="unfinished", detail=str(exc))
        return ErasureReply(
            erasure_id=job.erasure_id, status="done", runs=job.runs, removed=job.removed
        )

    async def erase_runs(self, tenant_id: str, runs: list[str], origin: Origin) -> erasure.Job:
        """Open (or resume) the job erasing `runs` of the tenant and run it to its end."""
        key = erasure.erasure_id(tenant_id, runs)

        async def job() -> erasure.Job:
            opened = await erasure.Erasure.open(self.nc, self.js, tenant_id, run_ids=runs)
            return await opened.run()

        return await self._once(key, origin, job)

    async def resume(self, job: erasure.Job) -> erasure.Job:
        """Finish a job whose runner went away (its record says how far it got)."""

        async def run() -> erasure.Job:
            job.attempts += 1
            return await erasure.Erasure(self.nc, self.js, job).run()

        return await self._once(job.erasure_id, "resumed", run)

    async def _once(
        self,
        key: str,
        origin: Origin,
        factory: Callable[[], Coroutine[Any, Any, erasure.Job]],
    ) -> erasure.Job:
        task = self.running.get(key)
        if task is None:
            task = asyncio.create_task(self._timed(origin, factory()), name=f"erasure {key}")
            self.running[key] = task
            task.add_done_callback(lambda t: self._forget(key, t))
        return await asyncio.shield(task)

    def _forget(self, key: str, task: asyncio.Task[erasure.Job]) -> None:
        if self.running.get(key) is task:
            del self.running[key]

    async def _timed(self, origin: Origin, job: Coroutine[Any, Any, erasure.Job]) -> erasure.Job:
        started = time.monotonic()
        outcome = "unfinished"
        try:
            done = await job
            outcome = "done"
            log.info("erasure %s done (%s): %s", done.erasure_id, origin, done.removed)
            return done
        finally:
            metrics.ERASURES.labels(origin, outcome).inc()
            metrics.ERASURE_DURATION.observe(time.monotonic() - started)

    async def close(self) -> None:
        """Stop the jobs still going (each resumes from its record, here or elsewhere)."""
        for task in list(self.running.values()):
            task.cancel()
        for task in list(self.running.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
