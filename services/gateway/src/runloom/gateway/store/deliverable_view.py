"""The gateway's read model of a run's deliverables, projected from its `deliverable.*` events,
and the queries that read it.

Applied by the archive consumer in the same transaction that archives the event (and advances
the `runs` row), so the model is as current as the run's own view. A row changes only when
the event's seq is past the row's `last_seq`: an event delivered twice, or replayed, changes
nothing.
"""

from __future__ import annotations

import asyncpg
import msgspec
from runloom.contracts.events import (
    DeliverableFailed,
    DeliverableProgress,
    DeliverableReady,
    DeliverableRequested,
    Event,
)

TYPES = {
    "deliverable.requested": DeliverableRequested,
    "deliverable.progress": DeliverableProgress,
    "deliverable.ready": DeliverableReady,
    "deliverable.failed": DeliverableFailed,
}

_UPSERT = """
INSERT INTO run_deliverables AS d (run_id, job_id, tenant_id, kind, status, formats, attempts,
    max_attempts, error, retry_at, completed_at, first_seq, last_seq)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12)
ON CONFLICT (run_id, job_id) DO UPDATE SET
    status = EXCLUDED.status,
    attempts = EXCLUDED.attempts,
    max_attempts = coalesce(EXCLUDED.max_attempts, d.max_attempts),
    error = CASE WHEN EXCLUDED.status = 'running' THEN d.error ELSE EXCLUDED.error END,
    retry_at = EXCLUDED.retry_at,
    completed_at = EXCLUDED.completed_at,
    last_seq = EXCLUDED.last_seq
WHERE d.last_seq < EXCLUDED.last_seq AND $5 <> 'queued'
RETURNING d.job_id
"""


async def apply(conn: asyncpg.Connection, ev: Event) -> None:
    """Apply one archived event to the read model (events of other types are ignored)."""
    payload_type = TYPES.get(ev.type)
    if payload_type is None:
        return
    try:
        p = msgspec.convert(ev.data, payload_type)
    except msgspec.ValidationError:
        return  # the archive keeps it; the listing shows what it can read
    at = ev.time
    attempts, max_attempts, error, retry_at, completed = 0, None, None, None, None
    formats: list[str] = []
    if isinstance(p, DeliverableRequested):
        status, formats = "queued", list(p.formats)
    elif isinstance(p, DeliverableProgress):
        status, attempts, max_attempts = "running", p.attempt, p.max_attempts
    elif isinstance(p, DeliverableReady):
        status, attempts, completed = "ready", p.attempt, at
        formats = [a.format for a in p.artifacts]
    else:
        assert isinstance(p, DeliverableFailed)
        status = "retrying" if p.will_retry else "failed"
        attempts, max_attempts, error = p.attempt, p.max_attempts, p.error
        retry_at = p.retry_at if p.will_retry else None
        completed = None if p.will_retry else at
    applied = await conn.fetchval(
        _UPSERT,
        ev.run_id,
        p.job_id,
        ev.tenant_id,
        p.kind,
        status,
        formats,
        attempts,
        max_attempts,
        error,
        retry_at,
        completed,
        ev.seq,
    )
    if applied is not None and isinstance(p, DeliverableReady):
        await conn.executemany(
            "INSERT INTO run_artifacts(artifact_id, run_id, job_id, tenant_id, kind, format,"
            " media_type, file_name, size, sha256, object_name, position, created_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
            " ON CONFLICT (artifact_id) DO NOTHING",
            [
                (
                    a.artifact_id,
                    ev.run_id,
                    p.job_id,
                    ev.tenant_id,
                    p.kind,
                    a.format,
                    a.media_type,
                    a.file_name,
                    a.size,
                    a.sha256,
                    a.object_name or f"sha256-{a.sha256}",
                    i,
                    at,
                )
                for i, a in enumerate(p.artifacts)
            ],
        )


# -- reading --------------------------------------------------------------------------------


async def run_tenant(pool: asyncpg.Pool, run_id: str) -> str | None:
    """The tenant of a run: by the runs read model, else by its deliverables (a run whose
    row is not projected yet)."""
    tenant: str | None = await pool.fetchval("SELECT tenant_id FROM runs WHERE id=$1", run_id)
    if tenant is None:
        tenant = await pool.fetchval(
            "SELECT tenant_id FROM run_deliverables WHERE run_id=$1 LIMIT 1", run_id
        )
    return tenant


async def jobs_of(pool: asyncpg.Pool, run_id: str) -> list[asyncpg.Record]:
    """The run's deliverable jobs, in the order they were requested."""
    return await pool.fetch(  # type: ignore[no-any-return]
        "SELECT * FROM run_deliverables WHERE run_id=$1 ORDER BY first_seq, kind", run_id
    )


async def artifacts_of(pool: asyncpg.Pool, run_id: str) -> list[asyncpg.Record]:
    """The run's artifacts, in the order they were made."""
    return await pool.fetch(  # type: ignore[no-any-return]
        "SELECT * FROM run_artifacts WHERE run_id=$1 ORDER BY created_at, position", run_id
    )


async def ready_artifact(
    pool: asyncpg.Pool, artifact_id: str, tenant_id: str
) -> asyncpg.Record | None:
    """One artifact of the tenant whose job is ready (None otherwise)."""
    return await pool.fetchrow(  # type: ignore[no-any-return]
        "SELECT a.* FROM run_artifacts a JOIN run_deliverables d USING (run_id, job_id)"
        " WHERE a.artifact_id=$1 AND a.tenant_id=$2 AND d.status='ready'",
        artifact_id,
        tenant_id,
    )
