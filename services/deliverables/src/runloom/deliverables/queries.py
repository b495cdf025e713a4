"""What the deliverables service knows of a run's jobs, over request/reply (queue group
`deliverables`): `deliverables.run` and `deliverables.artifact`; and `erase.deliverables`, where
it removes its own rows of an erasure and the stored objects no other artifact shares.

The gateway lists a run's deliverables from its own read model (projected from the run's
`deliverable.*` events) and asks here for what no event can carry: a job that finished after
its run ended (its events are not appended past the terminal one) and that job's artifacts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC
from typing import Any

import asyncpg
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from runloom.contracts import operations as ops
from runloom.contracts import subjects
from runloom.contracts.commands import (
    ArtifactReply,
    ArtifactRequest,
    ArtifactView,
    DeliverableJobView,
    EraseReply,
    EraseRequest,
    RunDeliverablesReply,
    RunDeliverablesRequest,
)
from runloom.deliverables.access import QUEUE
from runloom.deliverables.store import ArtifactStore
from runloom.runtime import erasure
from runloom.runtime.responder import Responder, Route

log = logging.getLogger(__name__)

ERASED_TABLES = (erasure.Owned("artifacts"), erasure.Owned("deliverable_jobs"))


def _artifact(r: Any) -> ArtifactView:
    return ArtifactView(
        artifact_id=r["artifact_id"],
        job_id=r["job_id"],
        run_id=r["run_id"],
        kind=r["kind"],
        format=r["format"],
        media_type=r["media_type"],
        file_name=r["file_name"],
        size=r["size"],
        sha256=r["sha256"],
        object_name=r["object_name"],
        created_at=r["created_at"].astimezone(UTC),
    )


def _utc(value: Any) -> Any:
    return None if value is None else value.astimezone(UTC)


@dataclass(frozen=True)
class Queries:
    """Answers from the deliverables' own tables."""

    pool: asyncpg.Pool
    store: ArtifactStore | None = None
    """The artifact bucket (an erasure deletes objects from it)."""

    async def run(self, req: RunDeliverablesRequest) -> RunDeliverablesReply:
        jobs = await self.pool.fetch(
            "SELECT * FROM deliverable_jobs WHERE run_id=$1 AND tenant_id=$2"
            " ORDER BY created_at, kind",
            req.run_id,
            req.tenant_id,
        )
        arts = await self.pool.fetch(
            "SELECT * FROM artifacts WHERE run_id=$1 AND tenant_id=$2 ORDER BY created_at, format",
            req.run_id,
            req.tenant_id,
        )
        by_job: dict[str, list[ArtifactView]] = {}
        for a in arts:
            by_job.setdefault(a["job_id"], []).append(_artifact(a))
        return RunDeliverablesReply(
            jobs=[
                DeliverableJobView(
                    job_id=j["job_id"],
                    kind=j["kind"],
                    status=j["status"],
                    formats=list(j["formats"]),
                    attempts=j["attempts"],
                    max_attempts=j["max_attempts"],
                    error=j["error"],
                    retry_at=_utc(j["retry_at"]),
                    completed_at=_utc(j["completed_at"]),
                    created_at=j["created_at"].astimezone(UTC),
                    artifacts=by_job.get(j["job_id"], []),
                )
                for j in jobs
            ]
        )

    async def artifact(self, req: ArtifactRequest) -> ArtifactReply:
        row = await self.pool.fetchrow(
            "SELECT a.* FROM artifacts a JOIN deliverable_jobs j USING (job_id)"
            " WHERE a.artifact_id=$1 AND a.tenant_id=$2 AND j.status='ready'",
            req.artifact_id,
            req.tenant_id,
        )
        return ArtifactReply(artifact=None if row is None else _artifact(row))

    async def erase(self, req: EraseRequest) -> EraseReply:
        """Objects first (those only the erased artifacts name: objects are shared by equal
        bytes), then the rows: a crash in between leaves rows that name them, so the next
        attempt finds them again."""
        scope, args = (
            ("tenant_id = $1", [req.tenant_id])
            if req.whole_tenant
            else ("run_id = ANY($1::text[]) AND tenant_id = $2", [list(req.run_ids), req.tenant_id])
        )
        names = await self.pool.fetch(
            f"SELECT DISTINCT object_name FROM artifacts WHERE {scope}"
            f" EXCEPT SELECT object_name FROM artifacts WHERE NOT ({scope})",
            *args,
        )
        objects = 0
        if self.store is not None:
            for row in names:
                try:
                    await self.store.bucket.delete(row["object_name"])
                    objects += 1
                except NotFoundError:
                    continue
        async with self.pool.acquire() as conn:
            removed = await erasure.erase_rows(conn, "deliverables", ERASED_TABLES, req)
        removed[f"bucket:{subjects.ARTIFACTS_BUCKET}"] = objects
        return EraseReply(removed=removed)


def responder(nc: NATS, js: JetStreamContext, queries: Queries) -> Responder:
    """`Queries` on core NATS, in the queue group `deliverables`."""
    routes = [
        Route(ops.DELIVERABLES_RUN, queries.run),
        Route(ops.DELIVERABLES_ARTIFACT, queries.artifact),
        Route(ops.ERASE["deliverables"], queries.erase),
    ]
    return Responder(nc, js, QUEUE, routes)
