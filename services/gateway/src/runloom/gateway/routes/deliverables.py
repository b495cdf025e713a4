"""Deliverables of a run and the download of one artifact.

- `GET /v1/runs/{run_id}/deliverables`: every requested kind with its status (queued,
  running, retrying, ready, failed), attempts and final reason, and its artifacts (format,
  size, download URL).
- `GET /v1/artifacts/{artifact_id}`: the bytes, with the artifact's content type and file name.

Both answer 404 for another tenant's run or artifact, exactly as for one that does not exist.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import msgspec
from fastapi import APIRouter, Depends
from fastapi.responses import Response
from nats.js.errors import NotFoundError
from runloom.contracts import subjects
from runloom.contracts.events import DeliverableRequested, decode_event, payload_of
from runloom.gateway._params import ArtifactIdPath, RunIdPath
from runloom.gateway.auth import Principal, principal
from runloom.gateway.problems import Problem, not_found, responses
from runloom.gateway.state import GatewayState, get_state

router = APIRouter(tags=["deliverables"])


async def startup(state: GatewayState) -> None:
    state.artifacts = await state.js.object_store(subjects.ARTIFACTS_BUCKET)


def _visible(p: Principal, run_id: str) -> bool:
    return p.run_scope is None or p.run_scope == run_id


async def _owns_run(state: GatewayState, p: Principal, run_id: str) -> bool:
    """The run is the principal's: by the runs read model, or by its deliverable jobs."""
    if not _visible(p, run_id):
        return False
    tenant = await state.pool.fetchval("SELECT tenant_id FROM runs WHERE id=$1", run_id)
    if tenant is None:
        tenant = await state.pool.fetchval(
            "SELECT tenant_id FROM deliverable_jobs WHERE run_id=$1 LIMIT 1", run_id
        )
    return tenant is not None and tenant == p.tenant_id


def _artifact(row: Any) -> dict[str, Any]:
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


async def _requested(state: GatewayState, run_id: str) -> list[DeliverableRequested]:
    """Kinds requested on the run, from the event archive (jobs not picked up yet)."""
    rows = await state.pool.fetch(
        "SELECT raw FROM run_events WHERE run_id=$1 AND type='deliverable.requested' ORDER BY seq",
        run_id,
    )
    out = []
    for r in rows:
        try:
            payload = payload_of(decode_event(bytes(r["raw"])))
        except (msgspec.ValidationError, msgspec.DecodeError):
            continue
        if isinstance(payload, DeliverableRequested):
            out.append(payload)
    return out


@router.get("/v1/runs/{run_id}/deliverables", responses=responses(404))
async def list_deliverables(
    run_id: RunIdPath,
    p: Principal = Depends(principal),
    state: GatewayState = Depends(get_state),
) -> dict[str, Any]:
    if not await _owns_run(state, p, run_id):
        raise not_found("run", run_id)
    jobs = await state.pool.fetch(
        "SELECT * FROM deliverable_jobs WHERE run_id=$1 ORDER BY created_at, kind", run_id
    )
    arts = await state.pool.fetch(
        "SELECT * FROM artifacts WHERE run_id=$1 ORDER BY created_at, format", run_id
    )
    by_job: dict[str, list[dict[str, Any]]] = {}
    for a in arts:
        by_job.setdefault(a["job_id"], []).append(_artifact(a))
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for j in jobs:
        seen.add(j["job_id"])
        artifacts = by_job.get(j["job_id"], [])
        out.append(
            {
                "kind": j["kind"],
                "job_id": j["job_id"],
                "status": j["status"],
                "formats": list(j["formats"]) or [a["format"] for a in artifacts],
                "attempts": j["attempts"],
                "max_attempts": j["max_attempts"],
                "error": j["error"],
                "retry_at": j["retry_at"].isoformat() if j["retry_at"] else None,
                "completed_at": j["completed_at"].isoformat() if j["completed_at"] else None,
                # Only a finished job's artifacts are offered: a half-rendered kind is not.
                "artifacts": artifacts if j["status"] == "ready" else [],
            }
        )
    for req in await _requested(state, run_id):
        if req.job_id in seen:
            continue
        seen.add(req.job_id)
        out.append(
            {
                "kind": req.kind,
                "job_id": req.job_id,
                "status": "queued",
                "formats": list(req.formats),
                "attempts": 0,
                "max_attempts": None,
                "error": None,
                "retry_at": None,
                "completed_at": None,
                "artifacts": [],
            }
        )
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
        "SELECT a.* FROM artifacts a JOIN deliverable_jobs j USING (job_id)"
        " WHERE a.artifact_id=$1 AND a.tenant_id=$2 AND j.status='ready'",
        artifact_id,
        p.tenant_id,
    )
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
