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
from typing import Any, TypeVar
from urllib.parse import quote

import msgspec
from fastapi import APIRouter, Depends
from fastapi.responses import Response
from nats.js.errors import NotFoundError
from runloom.contracts import operations as ops
from runloom.contracts import subjects
from runloom.contracts.commands import (
    ArtifactRequest,
    ArtifactView,
    RunDeliverablesRequest,
)
from runloom.contracts.operations import Operation
from runloom.contracts.types import rfc3339, rfc3339_or_none
from runloom.gateway._params import ArtifactIdPath, RunIdPath
from runloom.gateway.auth import Principal, principal
from runloom.gateway.problems import Problem, not_found, responses
from runloom.gateway.state import GatewayState, get_state
from runloom.gateway.store import deliverable_view
from runloom.runtime.request import RequestFailed, ask

router = APIRouter(tags=["deliverables"])
log = logging.getLogger(__name__)


Q = TypeVar("Q", bound=msgspec.Struct)
R = TypeVar("R", bound=msgspec.Struct)


async def _ask(state: GatewayState, op: Operation[Q, R], request: Q) -> R | None:
    """The deliverables service's answer, or None when there is none (the read model alone)."""
    try:
        return await ask(state.nc, op, request)
    except RequestFailed as failed:
        log.info("%s not answered (%s): the read model alone", op.subject, failed.detail)
        return None


async def startup(state: GatewayState) -> None:
    state.artifacts = await state.js.object_store(subjects.ARTIFACTS_BUCKET)


def _visible(p: Principal, run_id: str) -> bool:
    return p.run_scope is None or p.run_scope == run_id


async def _owns_run(state: GatewayState, p: Principal, run_id: str) -> bool:
    """The run is the principal's: by the runs read model, or by its deliverables."""
    if not _visible(p, run_id):
        return False
    tenant = await deliverable_view.run_tenant(state.pool, run_id)
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
        "created_at": rfc3339(row["created_at"]),
    }


@router.get("/v1/runs/{run_id}/deliverables", responses=responses(404))
async def list_deliverables(
    run_id: RunIdPath,
    p: Principal = Depends(principal),
    state: GatewayState = Depends(get_state),
) -> dict[str, Any]:
    if not await _owns_run(state, p, run_id):
        raise not_found("run", run_id)
    jobs = await deliverable_view.jobs_of(state.pool, run_id)
    arts = await deliverable_view.artifacts_of(state.pool, run_id)
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
            "retry_at": rfc3339_or_none(j["retry_at"]),
            "completed_at": rfc3339_or_none(j["completed_at"]),
            "artifacts": by_job.get(j["job_id"], []),
        }
    known = await _ask(
        state,
        ops.DELIVERABLES_RUN,
        RunDeliverablesRequest(tenant_id=p.tenant_id, run_id=run_id),
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
            "retry_at": rfc3339_or_none(job.retry_at),
            "completed_at": rfc3339_or_none(job.completed_at),
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
    row: Any = await deliverable_view.ready_artifact(state.pool, artifact_id, p.tenant_id)
    if row is None:
        found = await _ask(
            state,
            ops.DELIVERABLES_ARTIFACT,
            ArtifactRequest(tenant_id=p.tenant_id, artifact_id=artifact_id),
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
