"""Delivery: store the content model, request each deliverable, wait until each is final."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from typing import cast

from runloom.contracts import subjects
from runloom.contracts.commands import DeliverableJob
from runloom.contracts.content import ContentModel, content_hash
from runloom.contracts.events import ContentStored, DeliverableRequested, Event
from runloom.contracts.kinds import DELIVERABLE_KINDS, DeliverableKind
from runloom.orchestrator.phase import RunContext
from runloom.runtime import bus
from runloom.runtime.runstate import RunState

DEFAULT_DELIVERABLES = DELIVERABLE_KINDS


async def store(run: RunContext, content: ContentModel) -> Event:
    digest = content_hash(content)
    return await run.emit(ContentStored(content_hash=digest, content=content), "content")


def kinds(run: RunContext) -> list[DeliverableKind]:
    kinds = (run.state.options or {}).get("deliverables")
    if kinds is None:
        return list(DEFAULT_DELIVERABLES)
    # Checked at the edge (the gateway); an unknown kind still fails at deliverable_job.
    return [cast(DeliverableKind, str(k)) for k in kinds]


async def request(run: RunContext, kinds: list[DeliverableKind], stored: Event) -> None:
    digest = stored.data["content_hash"]
    for kind in kinds:
        job_id = hashlib.sha256(f"{run.run_id}:{kind}:{digest}".encode()).hexdigest()
        req = await run.emit(
            DeliverableRequested(kind=kind, job_id=job_id, content_hash=digest),
            f"deliverable:{kind}",
            cause=stored,
        )
        await bus.publish(
            run.svc.js,
            subjects.deliverable_job(kind),
            DeliverableJob(
                job_id=job_id,
                run_id=run.run_id,
                tenant_id=run.tenant_id,
                kind=kind,
                content_hash=digest,
                causation_id=req.id,
            ),
            msg_id=job_id,
        )


async def await_ready(run: RunContext, kinds: list[DeliverableKind]) -> list[str]:
    """Wait until every deliverable is ready or failed for good; returns what is missing."""
    if not kinds:
        return []
    requested = [run.existing[run.eid(f"deliverable:{k}")] for k in kinds]
    first = min(e.time.timestamp() for e in requested)
    deadline = first + run.svc.options.deliverables_timeout_s
    while True:
        run.wakeup.clear()
        st = await run.catch_up()
        pending = [k for k in kinds if not _final(st, k)]
        if not pending:
            break
        left = deadline - time.time()
        if left <= 0:
            break
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(run.wakeup.wait(), timeout=min(left, 2.0))
    missing = []
    for k in kinds:
        d = run.state.deliverables.get(k)
        if (
            d is None
            or d.status in ("requested", "running")
            or (d.status == "failed" and d.will_retry)
        ):
            missing.append(
                f"The {k} deliverable did not finish within "
                f"{run.svc.options.deliverables_timeout_s:.0f} s"
            )
        elif d.status == "failed":
            missing.append(f"The {k} deliverable failed after {d.attempt} attempt(s): {d.error}")
    return missing


def _final(st: RunState, kind: str) -> bool:
    d = st.deliverables.get(kind)
    return d is not None and (d.status == "ready" or (d.status == "failed" and not d.will_retry))
