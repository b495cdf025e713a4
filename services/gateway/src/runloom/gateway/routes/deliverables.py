"""Deliverables of a run and the download of one artifact.

- `GET /v1/runs/{run_id}/deliverables`: every requested kind with its status (queued,
  running, retrying, ready, failed), attempts and final reason, and its artifacts (format,
  size, download URL).
- `GET /v1/artifacts/{artifact_id}`: the bytes, with the artifact's content type and file name.

Both answer 404 for another tenant's run or artifact, exactly as for one that does not exist.
Both read the gateway's own read model (`run_deliverables`, `run_artifacts`), projected from the
run's `deliverable.*` events by the archive consumer (`gateway.store.deliverable_view`), and ask the
deliverables service (`deliverables.run|artifact`, request/reply) for what no event carries: a
job that finished after its run ended. The bytes come from the artifacts object store. When
the deliverables service does not answer, the read model alone is shown.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import quote

import msgspec
import nats.errors
from fastapi import APIRouter, Depends
from fastapi.responses import Response
from nats.js.errors import NotFoundError
from runloom.contracts import subjects
from runloom.contracts.commands import (
    ArtifactReply,
    ArtifactRequest,
    ArtifactView,
    RunDeliverablesReply,
    RunDeliverablesRequest,
)
from runloom.contracts.headers import Header
from runloom.gateway._params import ArtifactIdPath, RunIdPath
from runloom.gateway.auth import Principal, principal
from runloom.gateway.problems import Problem, not_found, responses
from runloom.gateway.state import GatewayState, get_state

router = APIRouter(tags=["deliverables"])
log = logging.getLogger(__name__)

ASK_TIMEOUT_S = 2.0
"""How long a listing or download waits for the deliverables service before going without."""

R = TypeVar("R", bound=msgspec.Struct)


async def _ask(
    state: GatewayState, subject: str, request: msgspec.Struct, reply: type[R]
) -> R | None:
    """The deliverables service's answer, or None when it does not answer."""
    try:
        msg = await state.nc.request(subject, msgspec.json.encode(request), timeout=ASK_TIMEOUT_S)
    except (nats.errors.Error, TimeoutError) as exc:
        log.info("%s not answered (%s): the read model alone", subject, type(exc).__name__)
        return None
    if (msg.headers or {}).get(Header.ERROR) is not None:
        return None
    return msgspec.json.decode(msg.data, type=reply)


async def startup(state: GatewayState) -> None:
    state.artifacts = await state.js.object_store(subjects.ARTIFACTS_BUCKET)


def _visible(p: Principal, run_id: str) -> bool:
    return p.run_scope is None or p.run_scope == run_id


async def _owns_run(state: GatewayState, p: Principal, run_id: str) -> bool:
    """The run is the principal's: by the runs read model, or by its deliverables."""
    if not _visible(p, run_id):
        return False
    tenant = await state.pool.fetchval("SELECT tenant_id FROM runs WHERE id=$1", run_id)
    if tenant is None:
        tenant = await state.pool.fetchval(
            "SELECT tenant_id FROM run_deliverables WHERE run_id=$1 LIMIT 1", run_id
        )
    return tenant is not None and tenant == p.tenant_id


def _artifact(row: Any) -> dict[str, Any]:
    """An artifact as listed, from a read-model row or the deliverables service's view."""
    if isinstance(row, ArtifactView):
        row = msgspec.structs.asdict(row)
    return {
        "artifact_id": row["artifact_id"],
        "kind": row["kind"],
        "format": row["format"],
        "media_type": row["media_type"],
        "file_name": row["file_name"],
        "size": row["size"],
        "sha256": row["sha256"],
        "url": f"/v1/artifacts/{row['artifact_id']}",
        "created_at": row["created_at"].isoformat(),
    }


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at else None


@router.get("/v1/runs/{run_id}/deliverables", responses=responses(404))
async def list_deliverables(
    run_id: RunIdPath,
    p: Principal = Depends(principal),
    state: GatewayState = Depends(get_state),
) -> dict[str, Any]:
    if not await _owns_run(state, p, run_id):
        raise not_found("run", run_id)
    jobs = await state.pool.fetch(
        "SELECT * FROM run_deliverables WHERE run_id=$1 ORDER BY first_seq, kind", run_id
    )
    arts = await state.pool.fetch(
        "SELECT * FROM run_artifacts WHERE run_id=$1 ORDER BY created_at, position", run_id
    )
    by_job: dict[str, list[dict[str, Any]]] = {}
    for a in arts:
        by_job.setdefault(a["job_id"], []).append(_artifact(a))
    listed: dict[str, dict[str, Any]] = {}
    for j in jobs:
        listed[j["job_id"]] = {
            "kind": j["kind"],
            "job_id": j["job_id"],
            "status": j["status"],
            "formats": list(j["formats"]),
            "attempts": j["attempts"],
            "max_attempts": j["max_attempts"],
            "error": j["error"],
            "retry_at": _iso(j["retry_at"]),
            "completed_at": _iso(j["completed_at"]),
            "artifacts": by_job.get(j["job_id"], []),
        }
    known = await _ask(
        state,
        subjects.DELIVERABLES_RUN,
        RunDeliverablesRequest(tenant_id=p.tenant_id, run_id=run_id),
        RunDeliverablesReply,
    )
    for job in known.jobs if known is not None else []:
        if job.job_id in listed and listed[job.job_id]["status"] in ("ready", "failed"):
            continue  # announced on the run: final
        listed[job.job_id] = {
            "kind": job.kind,
            "job_id": job.job_id,
            "status": job.status,
            "formats": list(job.formats),
            "attempts": job.attempts,
            "max_attempts": job.max_attempts,
            "error": job.error,
            "retry_at": _iso(job.retry_at),
            "completed_at": _iso(job.completed_at),
            "artifacts": [_artifact(a) for a in job.artifacts],
        }
    out: list[dict[str, Any]] = []
    for d in listed.values():
        artifacts = d["artifacts"]
        d["formats"] = d["formats"] or [a["format"] for a in artifacts]
        # Only a finished job's artifacts are offered: a half-rendered kind is not.
        d["artifacts"] = artifacts if d["status"] == "ready" else []
        out.append(d)
    items = [{**a, "status": d["status"]} for d in out for a in d["artifacts"]]
    return {"run_id": run_id, "deliverables": out, "items": items}


_DOWNLOAD = responses(404, 410)
_DOWNLOAD[200] = {
    "description": "The artifact's bytes, with its media type and file name.",
    "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
}


@router.get("/v1/artifacts/{artifact_id}", response_class=Response, responses=_DOWNLOAD)
async def download_artifact(
    artifact_id: ArtifactIdPath,
    p: Principal = Depends(principal),
    state: GatewayState = Depends(get_state),
) -> Response:
    row = await state.pool.fetchrow(
        "SELECT a.* FROM run_artifacts a JOIN run_deliverables d USING (run_id, job_id)"
        " WHERE a.artifact_id=$1 AND a.tenant_id=$2 AND d.status='ready'",
        artifact_id,
        p.tenant_id,
    )
    if row is None:
        found = await _ask(
            state,
            subjects.DELIVERABLES_ARTIFACT,
            ArtifactRequest(tenant_id=p.tenant_id, artifact_id=artifact_id),
            ArtifactReply,
        )
        if found is not None and found.artifact is not None:
            row = msgspec.structs.asdict(found.artifact)
    if row is None or not _visible(p, row["run_id"]):
        raise not_found("artifact", artifact_id)
    bucket = state.artifacts or await state.js.object_store(subjects.ARTIFACTS_BUCKET)
    try:
        result = await bucket.get(row["object_name"])
    except NotFoundError:
        raise Problem(
            410,
            "Gone",
            f"Artifact {artifact_id!r} is recorded but its bytes are no longer in the object "
            "store; request the deliverable again to render it anew.",
        ) from None
    data = bytes(result.data or b"")
    name = row["file_name"]
    ascii_name = name.encode("ascii", "replace").decode().replace('"', "")
    return Response(
        content=data,
        media_type=row["media_type"],
        headers={
            "Content-Disposition": (
                f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name)}"
            ),
            "ETag": f'"{row["sha256"]}"',
            "Cache-Control": "private, max-age=31536000, immutable",
            "X-Content-Type-Options": "nosniff",
        },
    )
