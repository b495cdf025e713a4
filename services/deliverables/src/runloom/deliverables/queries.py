"""What the deliverables service knows of a run's jobs, over request/reply (queue group
`deliverables`): `deliverables.run` and `deliverables.artifact`.

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
from runloom.contracts import subjects
from runloom.contracts.commands import (
    ArtifactReply,
    ArtifactRequest,
    ArtifactView,
    DeliverableJobView,
    RunDeliverablesReply,
    RunDeliverablesRequest,
)
from runloom.deliverables.access import QUEUE
from runloom.runtime.responder import Responder, Route

log = logging.getLogger(__name__)


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


def responder(nc: NATS, js: JetStreamContext, queries: Queries) -> Responder:
    """`Queries` on core NATS, in the queue group `deliverables`."""
    routes = [
        Route(subjects.DELIVERABLES_RUN, RunDeliverablesRequest, queries.run),
        Route(subjects.DELIVERABLES_ARTIFACT, ArtifactRequest, queries.artifact),
    ]
    return Responder(nc, js, QUEUE, routes)
