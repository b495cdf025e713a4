"""The orchestrator service (one replica): queues runs per tenant and works on its share.

Flow of a run (`dispatch` says it in full): `cmd.run.start` / `cmd.run.resume` are admitted
into the tenant's queue (`admissions`, acked at once); a dispatcher (any replica, one at a
time) hands queued runs out weighted round-robin across tenants as `cmd.drive.run`; the
replica that takes one (`drives`) takes the run's ownership lock (another replica working on
it now -> nak with delay), keeps the message alive while `drive` works, acks and frees the
run's slot. A SIGKILLed owner stops extending the message and its lock dies with its
connection, so within `ack_wait` another replica gets the run and carries on from the log.

Consumes: COMMANDS `cmd.run.>` (durable `orchestrator`; `StartRun`, `ResumeRun`) and
`cmd.drive.>` (durable `orchestrator-drive`; `DriveRun`), declared in `commands`. Serves
(request/reply, queue group `orchestrator`): the corpus it owns, `corpus.add|list|delete`
(`documents.Documents`). Publishes: each run's events (`run.queued` among them),
`cmd.run.resume`, `cmd.drive.run`, deliverable jobs, billing requests
(`runloom.billing_client`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import asyncpg
from nats.js.errors import NotFoundError
from opentelemetry import trace
from runloom.billing_client import Meter
from runloom.contracts import operations, subjects
from runloom.contracts.commands import DriveRun, ResumeRun, RunStalledRequest, StartRun
from runloom.contracts.events import (
    TERMINAL_TYPES,
    Event,
    RunCancelled,
    RunFailed,
    decode_event,
)
from runloom.orchestrator import dispatch, documents, metrics, retrieval
from runloom.orchestrator.access import DRIVE_DURABLE, DRIVE_FILTER, DURABLE, FILTER
from runloom.orchestrator.config import OrchestratorOptions
from runloom.orchestrator.phase import Services
from runloom.orchestrator.providers import OfflineProvider, OpenAIProvider, Provider
from runloom.orchestrator.run import Outcome, RunDriver
from runloom.runtime import bus, consumer, request
from runloom.runtime.config import Settings
from runloom.runtime.consumer import Consumer, Delivery, Lock
from runloom.runtime.eventlog import EventLog, RunClosed, StoreFull
from runloom.runtime.metrics import consumer_gauges
from runloom.runtime.retry import Backoff
from runloom.runtime.runstate import fold
from runloom.runtime.service import ServiceContext, serve
from runloom.runtime.telemetry import context_from_traceparent, tracer

log = logging.getLogger("runloom.orchestrator")

STORE_FULL_BACKOFF = Backoff(first_s=1.0, max_s=30.0, jitter=0.2)
"""Pauses between tries of a run whose events the full event store refused."""


def _store_full(exc: BaseException) -> bool:
    """`exc` is the event store refusing for want of space (alone, or every error of a group
    of parallel steps)."""
    if isinstance(exc, BaseExceptionGroup):
        _, rest = exc.split(StoreFull)
        return rest is None
    return isinstance(exc, StoreFull)


def make_provider(settings: Settings, options: OrchestratorOptions) -> Provider:
    if settings.provider == "offline":
        return OfflineProvider(token_delay_s=options.offline_token_delay_s)
    if settings.provider == "openai":
        return OpenAIProvider(
            base_url=settings.openai_base_url,
            api_key=settings.openai_api_key,
            model=settings.openai_model,
        )
    raise ValueError(
        f"RUNLOOM_PROVIDER={settings.provider!r} is not a provider; use 'offline' or 'openai'"
    )


class Orchestrator:
    def __init__(self, ctx: ServiceContext, options: OrchestratorOptions) -> None:
        self.ctx = ctx
        self.options = options
        self.log = EventLog(ctx.js, ctx.producer)
        self.svc = Services(
            nc=ctx.nc,
            js=ctx.js,
            pool=ctx.pool,
            log=self.log,
            meter=Meter(ctx.nc, self.log),
            provider=make_provider(ctx.settings, options),
            options=options,
            worker=ctx.producer,
        )
        self.dispatcher = dispatch.Dispatcher(
            ctx.pool,
            ctx.js,
            self.log,
            worker=ctx.producer,
            slots=options.concurrency,
            fifo=options.dispatch_order == "fifo",
        )

    async def admit(self, cmd: StartRun | ResumeRun, delivery: Delivery) -> None:
        """Queue the run in its tenant's queue; the dispatcher starts it in its turn."""
        await self.dispatcher.admit(cmd)

    async def drive(self, cmd: DriveRun, delivery: Delivery) -> None:
        """Drive the run from its events (it holds the run's lock) until it ends or pauses,
        then free its slot (not on a transient failure: the message comes back)."""
        trace.get_current_span().set_attribute("messaging.message.conversation_id", cmd.run_id)
        driver = RunDriver(self.svc, cmd.run_id, cmd.tenant_id, cmd.command_id)
        outcome: Outcome | Literal["closed"]
        try:
            outcome = await driver.drive()
        except RunClosed as exc:  # another writer ended it meanwhile
            outcome = "closed"
            log.info("run %s: closed by %s", cmd.run_id, exc.terminal.type)
        except Exception as exc:
            if not _store_full(exc):
                raise
            # Paused, not failed: nothing past its last stored event happened as far as anyone
            # can tell. It keeps its slot; the command comes back after a growing pause and
            # the run goes on from its events once the store takes appends again.
            wait = STORE_FULL_BACKOFF.delay(delivery.delivered - 1)
            metrics.RUNS_DRIVEN.labels("store_full").inc()
            log.warning(
                "run %s paused: the event store is full (nothing lost); trying again in %.0f s",
                cmd.run_id,
                wait,
            )
            await self._show_stalled(cmd, wait)
            delivery.retry(wait)
            return
        await self.dispatcher.release(cmd.run_id)
        if outcome == "missing":
            raise bus.PoisonMessage(f"run {cmd.run_id} has no run.created event; nothing to start")
        log.info("run %s: %s", cmd.run_id, outcome)
        metrics.RUNS_DRIVEN.labels(outcome).inc()
        if outcome != "paused":  # ended: its checkpoints served their purpose
            await self.ctx.pool.execute("DELETE FROM run_checkpoints WHERE run_id=$1", cmd.run_id)

    async def _show_stalled(self, cmd: DriveRun, wait_s: float) -> None:
        """Tell the gateway the run is paused on a full event store and when it is tried
        again (core NATS and the gateway's table: the store takes no appends). Best effort:
        unsaid, the next try says it again."""
        try:
            last = await self.ctx.js.get_last_msg(
                subjects.RUN_EVENTS_STREAM, subjects.run_events(cmd.run_id)
            )
            after_seq = decode_event(last.data).seq  # type: ignore[arg-type]
            await request.ask(
                self.ctx.nc,
                operations.RUNS_STALLED,
                RunStalledRequest(
                    run_id=cmd.run_id,
                    tenant_id=cmd.tenant_id,
                    reason="event_store_full",
                    detail="The event store is full, so the run's next step cannot be "
                    "stored; it is paused, nothing is lost, and it goes on by itself once "
                    "space is freed.",
                    retry_at=datetime.now(UTC) + timedelta(seconds=wait_s),
                    after_seq=after_seq,
                ),
                conversation_id=cmd.run_id,
            )
        except Exception as exc:  # the pause goes on all the same
            log.warning("run %s: its pause is not shown to its watchers (%s)", cmd.run_id, exc)

    async def sweep_clarifications(self) -> None:
        """Watch paused runs from any replica (rows locked FOR UPDATE SKIP LOCKED).

        A paused run has no owner, so this is what answers its cancellation, ends it when
        its clarification deadline passes, and resumes it if an answer is stored but its
        resume command never went out (the gateway died in between).
        """
        while not self.ctx.stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.ctx.stop.wait(), self.options.sweep_interval_s)
            if self.ctx.stop.is_set():
                return
            try:
                await self._sweep_once()
            except Exception:
                log.exception("paused-run sweep failed; retrying")

    async def _sweep_once(self) -> None:
        async with self.ctx.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "SELECT run_id, tenant_id, paused_at, deadline, deadline < now() AS expired"
                " FROM paused_runs ORDER BY deadline LIMIT 200 FOR UPDATE SKIP LOCKED"
            )
            for row in rows:
                if await self._sweep_run(row):
                    await conn.execute("DELETE FROM paused_runs WHERE run_id=$1", row["run_id"])

    async def _sweep_run(self, row: asyncpg.Record) -> bool:
        """Act on one paused run; True when it no longer needs watching."""
        subject = subjects.run_events(row["run_id"])
        try:
            msg = await self.ctx.js.get_last_msg(subjects.RUN_EVENTS_STREAM, subject)
        except NotFoundError:
            return True
        last = decode_event(msg.data)  # type: ignore[arg-type]
        if last.type in TERMINAL_TYPES:
            return True
        # What the sweep writes continues the trace of the event that caused it.
        with tracer("runloom.orchestrator").start_as_current_span(
            f"sweep {last.type}", context=context_from_traceparent(last.trace)
        ):
            return await self._sweep_act(row, last)

    async def _sweep_act(self, row: asyncpg.Record, last: Event) -> bool:
        run_id, tenant_id = row["run_id"], row["tenant_id"]
        try:
            if last.type == "cancel.requested":
                await self.log.append(
                    run_id,
                    tenant_id,
                    RunCancelled(reason="cancelled on request while waiting for an answer"),
                    event_id=f"{run_id}:cancelled",
                    causation_id=last.id,
                    check_existing=True,
                )
                return True
            if last.type == "clarification.answered":
                if time.time() - last.time.timestamp() > 5.0:
                    await bus.publish(
                        self.ctx.js,
                        subjects.RESUME_RUN,
                        ResumeRun(
                            command_id=f"resume-{last.id}",
                            run_id=run_id,
                            tenant_id=tenant_id,
                            reason="clarification_answered",
                            causation_id=last.id,
                        ),
                        msg_id=f"resume-{last.id}",
                    )
                return False
            if row["expired"]:
                state = fold(await self.log.events(run_id))
                if state.clarification is None:
                    return False  # answered or resumed meanwhile: its owner takes it from here
                waited = (datetime.now(UTC) - row["paused_at"]).total_seconds()
                await self.log.append(
                    run_id,
                    tenant_id,
                    RunFailed(
                        error="Nobody answered the clarification question within "
                        f"{_duration(waited)}, so the run ended without researching. "
                        "Start a new run with a more specific question.",
                        reason="clarification_timeout",
                    ),
                    event_id=f"{run_id}:clarification-timeout",
                    causation_id=state.clarifications[-1].event_id,  # the open question
                    check_existing=True,
                )
                return True
        except RunClosed:
            return True
        finally:
            self.log.forget(run_id)
        return False

    async def run(self) -> None:
        self.lock_pool = await asyncpg.create_pool(
            self.ctx.settings.effective_database_url,
            min_size=1,
            max_size=self.options.concurrency + 2,
        )
        sweeper = asyncio.create_task(self.sweep_clarifications())
        if self.ctx.management is not None:
            for durable in (DURABLE, DRIVE_DURABLE):
                self.ctx.management.add_scrape_hook(
                    consumer_gauges(self.ctx.js, subjects.COMMANDS_STREAM, durable)
                )
            pool = self.ctx.pool
            self.ctx.management.add_scrape_hook(lambda: dispatch.depth_gauges(pool))
        embedder = asyncio.create_task(retrieval.embedding_job(self.ctx.pool))
        corpus = documents.Documents(self.ctx.nc, self.ctx.js, self.ctx.pool)
        try:
            await corpus.start()
            await documents.seed_default_corpus(self.ctx.pool, self.options.default_corpus_tenants)
            bound: set[str] = set()
            admissions, drives = commands(self, self.options)

            def ready(name: str) -> Any:
                def bound_one() -> None:
                    bound.add(name)
                    if len(bound) == 2 and self.ctx.ready is not None:
                        self.ctx.ready()

                return bound_one

            await asyncio.gather(
                consumer.serve(
                    admissions,
                    self.ctx.js,
                    self.ctx.stop,
                    events=self.log,
                    ready=ready(admissions.durable),
                ),
                consumer.serve(
                    drives,
                    self.ctx.js,
                    self.ctx.stop,
                    events=self.log,
                    lock_pool=self.lock_pool,
                    ready=ready(drives.durable),
                ),
                self.dispatcher.serve(self.ctx.stop),
            )
        finally:
            await corpus.stop()
            for task in (sweeper, embedder):
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
            await self.lock_pool.close()


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} seconds"
    if seconds < 7200:
        return f"{seconds / 60:.0f} minutes"
    return f"{seconds / 3600:.1f} hours"


# -- what the orchestrator consumes and publishes ----------------------------------------------


def commands(
    orchestrator: Orchestrator, options: OrchestratorOptions
) -> tuple[Consumer[Any], Consumer[Any]]:
    """The COMMANDS work queue, in two durables.

    `orchestrator` (`cmd.run.start`, `cmd.run.resume`): each command queues its run in its
    tenant's queue (`dispatch.Dispatcher.admit`) and is acked at once. `orchestrator-drive`
    (`cmd.drive.run`, published by the dispatcher): one owner per run, holding the run's lock
    (another replica working on it: handed back in 2 s) and keeping the command alive while
    it drives; if it dies, its lock dies with its connection and the command is redelivered
    within `ack_wait` to a replica that carries the run on. Publishes: the run's events
    (RUN_EVENTS), `cmd.run.resume`, `cmd.drive.run`, deliverable jobs (JOBS), billing requests
    (`billing.reserve|commit|release`, request/reply). Beside them the replica answers
    `corpus.add|list|delete` (request/reply, `documents.Documents`).
    """
    admissions: Consumer[Any] = Consumer(
        stream=subjects.COMMANDS_STREAM,
        durable=DURABLE,
        filter_subject=FILTER,
        decodes={subjects.START_RUN: StartRun, subjects.RESUME_RUN: ResumeRun},
        handler=orchestrator.admit,
        ack_wait_s=30.0,
        concurrency=16,
        batch=64,
    )
    drives: Consumer[Any] = Consumer(
        stream=subjects.COMMANDS_STREAM,
        durable=DRIVE_DURABLE,
        filter_subject=DRIVE_FILTER,
        decodes={subjects.DRIVE_RUN: DriveRun},
        handler=orchestrator.drive,
        ack_wait_s=options.ack_wait_s,
        concurrency=options.concurrency,
        keep_alive=True,
        lock=Lock(key=lambda cmd: f"run:{cmd.run_id}", busy_retry_s=2.0),
    )
    return admissions, drives


async def main(ctx: ServiceContext) -> None:
    await Orchestrator(ctx, OrchestratorOptions()).run()


async def run(settings: Settings) -> None:
    await serve("orchestrator", settings, main)
