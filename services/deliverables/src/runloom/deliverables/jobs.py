"""One deliverable job, from message to artifacts: decode, lock, load, render, store, announce.

Idempotent by construction, so a redelivery, a second copy or a second replica yields each
artifact once and one `deliverable.ready` per job:
- the job's lock (`job:<job_id>`, taken by the consumer loop, see `service.py`): one replica
  renders a job at a time; the other waits, then finds the job done and acks;
- the `deliverable_jobs` row: a job already ready (or failed for good) is acked at once;
- artifacts keyed by (job_id, format), bytes named by their sha256: a format already stored
  is not rendered again, the same bytes are stored once;
- events with deterministic ids (`<job_id>:ready`, `<job_id>:failed:<attempt>`, ...) appended
  with `check_existing=True`: appended at most once, whoever retries.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import time
from dataclasses import dataclass
from typing import Any

import asyncpg
import msgspec
from opentelemetry import trace
from runloom.contracts.commands import DeliverableJob
from runloom.contracts.content import ContentModel
from runloom.contracts.events import (
    ArtifactRef,
    ContentStored,
    DeliverableFailed,
    DeliverableProgress,
    DeliverableReady,
    payload_of,
)
from runloom.contracts.types import now
from runloom.deliverables import metrics
from runloom.deliverables.options import Options
from runloom.deliverables.render import Document, Format, file_name, formats_of
from runloom.deliverables.store import ArtifactStore
from runloom.runtime import bus
from runloom.runtime.consumer import Delivery
from runloom.runtime.eventlog import EventLog, RunClosed
from runloom.runtime.telemetry import tracer

log = logging.getLogger("runloom.deliverables")

LOCK_WAIT_S = 900.0
"""Longest wait for another replica's attempt at the same job; then the copy is redelivered."""


class JobFailed(Exception):
    """The job cannot complete on this attempt; `final` when retrying cannot help."""

    def __init__(self, reason: str, *, final: bool = False) -> None:
        super().__init__(reason)
        self.final = final


def artifact_id(job_id: str, format: str) -> str:
    """Stable per (job, format): a re-render keeps the id a user may already hold."""
    return "art_" + hashlib.sha256(f"{job_id}:{format}".encode()).hexdigest()[:32]


@dataclass
class _Outcome:
    ack: bool
    nak_delay: float = 0.0


class JobRunner:
    """Handles `DeliverableJob` messages for one replica."""

    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        events: EventLog,
        store: ArtifactStore,
        options: Options,
    ) -> None:
        self.pool = pool
        self.events = events
        self.store = store
        self.options = options
        self._stored_ids: dict[str, set[str]] = {}
        """Per job being handled: ids of its events already on the run (see `_append`)."""

    async def handle(self, job: DeliverableJob, delivery: Delivery) -> None:
        """One job, under its lock (`delivery.conn`); a retry later is a nak with delay."""
        if not (job.job_id and job.run_id and job.tenant_id and job.kind and job.content_hash):
            raise bus.PoisonMessage(
                "DeliverableJob needs job_id, run_id, tenant_id, kind and content_hash"
            )
        assert delivery.conn is not None, "the deliverables consumer declares a lock"
        try:
            outcome = await self._run(delivery.conn, job, delivery.delivered)
        finally:
            self._stored_ids.pop(job.job_id, None)
            self.events.forget(job.run_id)
        if not outcome.ack:
            delivery.retry(outcome.nak_delay)

    # -- the job ---------------------------------------------------------------------------

    async def _run(self, conn: asyncpg.Connection, job: DeliverableJob, delivered: int) -> _Outcome:
        row = await conn.fetchrow(
            """
            INSERT INTO deliverable_jobs
                (job_id, run_id, tenant_id, kind, content_hash, formats, max_attempts)
            VALUES ($1, $2, $3, $4, $5, $6, $7)
            ON CONFLICT (job_id) DO UPDATE SET updated_at = now()
            RETURNING status, attempts
            """,
            job.job_id,
            job.run_id,
            job.tenant_id,
            job.kind,
            job.content_hash,
            list(job.formats),
            self.options.max_attempts,
        )
        assert row is not None
        if row["status"] in ("ready", "failed"):
            log.info(
                "job %s already %s; acking the copy",
                job.job_id,
                row["status"],
                extra={"run_id": job.run_id},
            )
            return _Outcome(ack=True)
        # Attempts are counted here, not from the message's delivery count: a copy that
        # waited in a replica's queue past its ack deadline was redelivered without ever
        # being tried, while an attempt cut short by a crash was started and counts.
        attempt = row["attempts"] + 1
        if row["attempts"] >= self.options.max_attempts:
            # Every attempt started and none finished: the replicas died under it.
            return await self._failed(
                conn,
                job,
                row["attempts"],
                f"none of the {row['attempts']} attempt(s) finished: the replica rendering "
                "it was killed or crashed each time",
                final=True,
            )
        await conn.execute(
            "UPDATE deliverable_jobs SET status='running', attempts=$2, retry_at=NULL,"
            " updated_at=now() WHERE job_id=$1",
            job.job_id,
            attempt,
        )
        metrics.JOB_ATTEMPTS.labels(job.kind).inc()
        span = trace.get_current_span()
        span.set_attribute("messaging.message.conversation_id", job.run_id)
        span.set_attribute("runloom.job.kind", job.kind)
        span.set_attribute("runloom.job.attempt", attempt)
        log.info(
            "rendering %s (attempt %d, delivery %d)",
            job.kind,
            attempt,
            delivered,
            extra={"run_id": job.run_id, "job_id": job.job_id},
        )
        try:
            try:
                formats = formats_of(job.kind, list(job.formats))
            except ValueError as exc:
                raise JobFailed(str(exc), final=True) from None
            content = await self._content(job)
            refs = await self._render_all(conn, job, content, formats, attempt)
        except JobFailed as exc:
            return await self._failed(conn, job, attempt, str(exc), final=exc.final)
        except Exception as exc:
            # The bus or the database failed under the job (a restart, a timeout): a
            # transient failure, retried like any other and visible as one. If even recording
            # it fails, the error propagates and the consumer redelivers the message.
            log.exception("job %s hit an infrastructure error", job.job_id)
            reason = f"storing or announcing the {job.kind} failed: {type(exc).__name__}: {exc}"
            return await self._failed(conn, job, attempt, reason, final=False)
        await self._append(
            job,
            DeliverableReady(kind=job.kind, job_id=job.job_id, artifacts=refs, attempt=attempt),
            f"{job.job_id}:ready",
        )
        metrics.JOBS_READY.labels(job.kind).inc()
        await conn.execute(
            "UPDATE deliverable_jobs SET status='ready', error=NULL, completed_at=now(),"
            " updated_at=now() WHERE job_id=$1",
            job.job_id,
        )
        log.info(
            "%s ready: %s",
            job.kind,
            ", ".join(r.format for r in refs),
            extra={"run_id": job.run_id, "job_id": job.job_id},
        )
        return _Outcome(ack=True)

    async def _content(self, job: DeliverableJob) -> ContentModel:
        """The content model stored on the run (the `content.stored` with the job's hash).

        The same single pass notes which of this job's events are already stored (a crashed
        or concurrent earlier attempt), so each is appended at most once without re-reading
        the run for every append.
        """
        content: ContentModel | None = None
        stored_ids: set[str] = set()
        self._stored_ids[job.job_id] = stored_ids
        try:
            async for stored in self.events.read(job.run_id):
                ev = stored.event
                if ev.id.startswith(job.job_id):
                    stored_ids.add(ev.id)
                if (
                    content is None
                    and ev.type == "content.stored"
                    and ev.data.get("content_hash") == job.content_hash
                ):
                    payload = payload_of(ev)
                    assert isinstance(payload, ContentStored)
                    content = payload.content
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise JobFailed(
                f"the stored content model of run {job.run_id} is invalid: {exc}"
            ) from None
        if content is None:
            raise JobFailed(
                f"run {job.run_id} has no content.stored event with content hash "
                f"{job.content_hash[:12]}…; nothing to render"
            )
        return content

    async def _render_all(
        self,
        conn: asyncpg.Connection,
        job: DeliverableJob,
        content: ContentModel,
        formats: tuple[Format, ...],
        attempt: int,
    ) -> list[ArtifactRef]:
        done = {
            r["format"]
            for r in await conn.fetch("SELECT format FROM artifacts WHERE job_id=$1", job.job_id)
        }
        total = len(formats)
        await self._append(
            job,
            DeliverableProgress(
                kind=job.kind,
                job_id=job.job_id,
                message=f"rendering {job.kind}: {', '.join(f.name for f in formats)}",
                attempt=attempt,
                fraction=len(done & {f.name for f in formats}) / total,
                max_attempts=self.options.max_attempts,
            ),
            f"{job.job_id}:progress:{attempt}:start",
        )
        try:
            doc = Document(content)
        except Exception as exc:
            raise JobFailed(f"the content model cannot be rendered: {exc}") from None
        for i, fmt in enumerate(formats, start=1):
            if fmt.name in done:
                continue
            if self.options.render_delay_s > 0:
                await asyncio.sleep(self.options.render_delay_s)
            t0 = time.perf_counter()
            try:
                with tracer("runloom.deliverables").start_as_current_span(
                    f"render {job.kind} {fmt.name}",
                    attributes={"run_id": job.run_id, "job_id": job.job_id, "attempt": attempt},
                ):
                    data = await asyncio.to_thread(fmt.render, doc)
            except Exception as exc:
                log.warning(
                    "rendering %s %s failed: %s",
                    job.kind,
                    fmt.name,
                    exc,
                    extra={"run_id": job.run_id, "job_id": job.job_id},
                )
                raise JobFailed(f"rendering {job.kind} as {fmt.name} failed: {exc}") from None
            ms = (time.perf_counter() - t0) * 1000
            name = await self.store.put(data)
            await conn.execute(
                """
                INSERT INTO artifacts (job_id, format, artifact_id, run_id, tenant_id, kind,
                    media_type, file_name, size, sha256, object_name)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                ON CONFLICT (job_id, format) DO NOTHING
                """,
                job.job_id,
                fmt.name,
                artifact_id(job.job_id, fmt.name),
                job.run_id,
                job.tenant_id,
                job.kind,
                fmt.media_type,
                file_name(content, fmt),
                len(data),
                hashlib.sha256(data).hexdigest(),
                name,
            )
            log.info(
                "rendered %s %s: %d bytes in %.0f ms",
                job.kind,
                fmt.name,
                len(data),
                ms,
                extra={"run_id": job.run_id, "job_id": job.job_id},
            )
            await self._append(
                job,
                DeliverableProgress(
                    kind=job.kind,
                    job_id=job.job_id,
                    message=f"rendered {fmt.name} ({len(data):,} bytes)",
                    attempt=attempt,
                    fraction=i / total,
                ),
                f"{job.job_id}:progress:{attempt}:{fmt.name}",
            )
        rows = {
            r["format"]: r
            for r in await conn.fetch("SELECT * FROM artifacts WHERE job_id=$1", job.job_id)
        }
        return [
            ArtifactRef(
                artifact_id=rows[f.name]["artifact_id"],
                format=f.name,
                media_type=rows[f.name]["media_type"],
                file_name=rows[f.name]["file_name"],
                size=rows[f.name]["size"],
                sha256=rows[f.name]["sha256"],
                object_name=rows[f.name]["object_name"],
            )
            for f in formats
        ]

    async def _failed(
        self,
        conn: asyncpg.Connection,
        job: DeliverableJob,
        attempt: int,
        reason: str,
        *,
        final: bool,
    ) -> _Outcome:
        will_retry = not final and attempt < self.options.max_attempts
        delay = self.options.retry_delay(attempt) if will_retry else 0.0
        retry_at = now() + dt.timedelta(seconds=delay) if will_retry else None
        error = reason if will_retry else f"gave up after attempt {attempt}: {reason}"
        metrics.JOB_FAILURES.labels(job.kind, "false" if will_retry else "true").inc()
        await self._append(
            job,
            DeliverableFailed(
                kind=job.kind,
                job_id=job.job_id,
                error=error,
                attempt=attempt,
                max_attempts=self.options.max_attempts,
                will_retry=will_retry,
                retry_at=retry_at,
            ),
            f"{job.job_id}:failed:{attempt}",
        )
        await conn.execute(
            "UPDATE deliverable_jobs SET status=$2, error=$3,"
            " retry_at=$4, updated_at=now(),"
            " completed_at=CASE WHEN $2='failed' THEN now() END WHERE job_id=$1",
            job.job_id,
            "retrying" if will_retry else "failed",
            error,
            retry_at,
        )
        log.warning(
            "%s failed (attempt %d/%d, %s): %s",
            job.kind,
            attempt,
            self.options.max_attempts,
            f"retry in {delay:.1f}s" if will_retry else "final",
            reason,
            extra={"run_id": job.run_id, "job_id": job.job_id},
        )
        return _Outcome(ack=not will_retry, nak_delay=delay)

    async def _append(self, job: DeliverableJob, payload: Any, event_id: str) -> None:
        """Append once (deterministic id); a run that already ended keeps its artifacts.

        Holding the job's lock, only an earlier attempt can have written this id: that is
        known from the scan at the start of the attempt (`_stored_ids`) when the scan ran;
        otherwise the run is searched for it first.
        """
        stored_ids = self._stored_ids.get(job.job_id)
        scanned = stored_ids is not None
        if stored_ids is not None and event_id in stored_ids:
            return
        try:
            await self.events.append(
                job.run_id,
                job.tenant_id,
                payload,
                event_id=event_id,
                causation_id=job.causation_id,
                check_existing=not scanned,
            )
        except RunClosed as exc:
            log.info(
                "run already ended (%s); not announcing %s",
                exc.terminal.type,
                event_id,
                extra={"run_id": job.run_id, "job_id": job.job_id},
            )
