"""Erasure: remove every trace of a tenant, or of some of its runs, as one resumable job.

The job is a record in the JetStream key-value bucket `erasures` (key: the erasure id), written
after each step with what the step removed. Run again after a crash, the same erasure skips
the steps recorded as done and goes on; every step is idempotent, so a step that was done but
not yet recorded is simply done again (removing nothing more).

Steps, in order:

1. `inventory`: the gateway revokes the tenant's API keys (whole tenant: nobody can start or
   read anything any more) and names the runs to erase; they go into the record, so the steps
   after it need no table that a later step removes.
2. `stream:RUN_EVENTS`: each run's subject `run.<id>.events` purged (the stream is the truth:
   it goes first, so no projection can be rebuilt from it afterwards);
   `stream:COMMANDS`, `stream:JOBS`, `stream:DEAD_LETTERS`: every message naming one of the runs
   (or the tenant, for a whole tenant) deleted by sequence.
3. `service:<name>` for orchestrator, deliverables, billing, webhooks, then gateway: each
   service removes its own rows (and stored objects) on `erase.<service>` (`EraseRequest`);
   nobody reaches into another service's schema. The gateway goes last: its archive and read
   models are what point at everything else.
4. `verify`: the runs' stream subjects are empty (a late archive batch cannot bring anything
   back from them); the job ends `done` with the sum of what every step removed. A done
   record keeps the erasure id (the tenant's or the run's id), the number of runs and the
   counts: the run ids leave it.

Runs still in flight are not erased: a single run must have ended (the gateway answers 409;
and a run its inventory names as not ended stops the job before anything is removed), and a
whole tenant's open runs are cancelled first by the caller (see `admin tenant delete`).

Who runs a job: the lifecycle service (`runloom.lifecycle`: the gateway's `DELETE
/v1/runs/{id}` through `lifecycle.erase`, the retention sweeper, resuming jobs left behind), and
`python -m runloom.admin tenant delete` with the admin identity. Only those two identities may
purge `RUN_EVENTS`, delete the scanned streams' messages and write the `erasures` bucket.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.errors import (
    BadRequestError,
    BucketNotFoundError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NotFoundError,
)
from runloom.contracts import subjects
from runloom.contracts.commands import EraseReply, EraseRequest
from runloom.contracts.operations import ERASE, Answerer
from runloom.runtime.request import RequestFailed, ask

log = logging.getLogger(__name__)

SCANNED_STREAMS = (subjects.COMMANDS_STREAM, subjects.JOBS_STREAM, subjects.DLQ_STREAM)
"""Streams whose subjects do not name a run: their messages are read and matched."""
SERVICE_ORDER: tuple[Answerer, ...] = (
    "orchestrator",
    "deliverables",
    "billing",
    "webhooks",
    "gateway",
)


class ErasureError(RuntimeError):
    """An erasure that cannot go on now (a service did not answer); run it again."""


@dataclass
class Job:
    erasure_id: str
    tenant_id: str
    whole_tenant: bool
    run_ids: list[str] = field(default_factory=list)
    open_run_ids: list[str] = field(default_factory=list)
    runs: int = 0
    """How many runs were erased (the ids leave the record once it is done)."""
    done: list[str] = field(default_factory=list)
    removed: dict[str, int] = field(default_factory=dict)
    status: str = "running"
    started_at: str = ""
    updated_at: str = ""
    finished_at: str | None = None
    attempts: int = 0

    def add(self, removed: dict[str, int]) -> None:
        for key, n in removed.items():
            self.removed[key] = self.removed.get(key, 0) + n

    def to_json(self) -> bytes:
        return json.dumps(self.__dict__, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Job:
        return cls(**json.loads(raw))


def erasure_id(tenant_id: str, run_ids: list[str] | None = None) -> str:
    """Key of the job: one per tenant, one per run, one per set of runs (the same request
    again resumes it)."""
    if run_ids is None:
        return f"tenant-{tenant_id}"
    if len(run_ids) == 1:
        return f"run-{run_ids[0]}"
    digest = hashlib.sha256("\n".join(sorted(run_ids)).encode()).hexdigest()[:20]
    return f"runs-{tenant_id}-{digest}"


async def bucket(js: JetStreamContext) -> Any:
    """The `erasures` key-value bucket (`bus.provision` creates it)."""
    try:
        return await js.key_value(subjects.ERASURES_BUCKET)
    except BucketNotFoundError:
        raise ErasureError(
            f"the {subjects.ERASURES_BUCKET} bucket is missing: provision the streams first "
            "(runloom up, or python -m runloom.admin provision)"
        ) from None


async def unfinished(js: JetStreamContext, idle_s: float) -> list[Job]:
    """Jobs still `running` whose record has not moved for `idle_s` (their runner is gone).

    The keys come from the bucket stream's subjects (a stream info, no consumer); a lease
    (`take_lease`) is no job and is left out."""
    prefix = f"$KV.{subjects.ERASURES_BUCKET}."
    info = await js.stream_info(f"KV_{subjects.ERASURES_BUCKET}", subjects_filter=f"{prefix}>")
    keys = [subject.removeprefix(prefix) for subject in info.state.subjects or {}]
    cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=idle_s)
    out = []
    for key in keys:
        if key.startswith(LEASE_PREFIX):
            continue
        job = await load(js, key)
        if job and job.status == "running" and dt.datetime.fromisoformat(job.updated_at) < cutoff:
            out.append(job)
    return out


async def load(js: JetStreamContext, key: str) -> Job | None:
    kv = await bucket(js)
    try:
        entry = await kv.get(key)
    except KeyNotFoundError:
        return None
    return Job.from_json(entry.value) if entry.value else None


LEASE_PREFIX = "lease-"
"""Keys of the bucket that hold a lease (`take_lease`), not a job."""


async def take_lease(js: JetStreamContext, name: str, holder: str, ttl_s: float) -> bool:
    """Hold the lease `name` for `ttl_s` (True), unless another holder's is still running.

    Compare-and-set on the key's revision: of two replicas reaching for a free lease at once,
    one wins. A holder that dies leaves it to expire."""
    kv = await bucket(js)
    key = LEASE_PREFIX + name
    now = dt.datetime.now(dt.UTC).timestamp()
    mine = json.dumps({"holder": holder, "until": now + ttl_s}).encode()
    try:
        entry = await kv.get(key)
    except KeyNotFoundError:
        entry = None
    try:
        if entry is None:
            await kv.create(key, mine)
            return True
        held = json.loads(entry.value or b"{}")
        if held.get("holder") != holder and float(held.get("until", 0)) > now:
            return False
        await kv.update(key, mine, last=entry.revision)
        return True
    except (KeyWrongLastSequenceError, BadRequestError):  # another replica was first
        return False


async def release_lease(js: JetStreamContext, name: str, holder: str) -> None:
    """Give the lease back (if `holder` still holds it): the next reacher needs not wait."""
    kv = await bucket(js)
    key = LEASE_PREFIX + name
    try:
        entry = await kv.get(key)
    except KeyNotFoundError:
        return
    if json.loads(entry.value or b"{}").get("holder") == holder:
        free = json.dumps({"holder": "", "until": 0}).encode()
        with contextlib.suppress(KeyWrongLastSequenceError, BadRequestError):
            await kv.update(key, free, last=entry.revision)


Step = Callable[[Job], Awaitable[dict[str, int]]]
Settle = Callable[[list[str]], Awaitable[None]]


class Erasure:
    """One erasure job, run (or resumed) to its end by `run()`."""

    def __init__(self, nc: NATS, js: JetStreamContext, job: Job) -> None:
        self.nc = nc
        self.js = js
        self.job = job

    @classmethod
    async def open(
        cls,
        nc: NATS,
        js: JetStreamContext,
        tenant_id: str,
        *,
        run_ids: Iterable[str] | None = None,
    ) -> Erasure:
        """The job erasing `run_ids` of the tenant (None: the whole tenant), resumed if a
        record of it exists."""
        runs = list(run_ids) if run_ids is not None else None
        key = erasure_id(tenant_id, runs)
        job = await load(js, key)
        if job is None or job.status == "done":
            job = Job(
                erasure_id=key,
                tenant_id=tenant_id,
                whole_tenant=runs is None,
                run_ids=runs or [],
                started_at=_now(),
            )
        job.attempts += 1
        return cls(nc, js, job)

    async def save(self) -> None:
        self.job.updated_at = _now()
        kv = await bucket(self.js)
        await kv.put(self.job.erasure_id, self.job.to_json())

    def steps(self) -> list[tuple[str, Step]]:
        out: list[tuple[str, Step]] = [("inventory", self.inventory)]
        out.append((f"stream:{subjects.RUN_EVENTS_STREAM}", self.purge_run_events))
        for stream in SCANNED_STREAMS:
            out.append((f"stream:{stream}", self._scan(stream)))
        for service in SERVICE_ORDER:
            out.append((f"service:{service}", self._service(service)))
        out.append(("verify", self.verify))
        return out

    async def run(self, *, settle: Settle | None = None) -> Job:
        """Every step not recorded as done, in order. `settle`: called with the runs still
        going after the inventory (a whole tenant's), to end them before anything is removed;
        without it, open runs are refused."""
        await self.save()
        for name, step in self.steps():
            if name in self.job.done:
                continue
            if name != "inventory" and self.job.open_run_ids:
                if settle is None:
                    raise ErasureError(
                        f"runs still going: {', '.join(self.job.open_run_ids)}; cancel them first"
                    )
                await settle(self.job.open_run_ids)
                self.job.open_run_ids = []
                await self.save()
            removed = await step(self.job)
            self.job.add(removed)
            self.job.done.append(name)
            await self.save()
            log.info("erasure %s: %s done (%s)", self.job.erasure_id, name, removed)
        self.job.status = "done"
        self.job.finished_at = _now()
        self.job.runs, self.job.run_ids = len(self.job.run_ids), []
        await self.save()
        return self.job

    # -- the steps -------------------------------------------------------------------------

    async def ask(self, service: Answerer, request: EraseRequest) -> EraseReply:
        try:
            return await ask(self.nc, ERASE[service], request, message_id=self.job.erasure_id)
        except RequestFailed as exc:
            raise ErasureError(
                f"{exc.detail} ({exc.why} on {ERASE[service].subject}); the erasure is recorded: "
                "run it again once the service answers (it resumes)"
            ) from None

    def request(self, *, inventory: bool = False) -> EraseRequest:
        return EraseRequest(
            erasure_id=self.job.erasure_id,
            tenant_id=self.job.tenant_id,
            run_ids=list(self.job.run_ids),
            whole_tenant=self.job.whole_tenant,
            inventory=inventory,
        )

    async def inventory(self, job: Job) -> dict[str, int]:
        reply = await self.ask("gateway", self.request(inventory=True))
        if job.whole_tenant:
            job.run_ids = sorted(set(job.run_ids) | set(reply.run_ids))
        job.open_run_ids = list(reply.open_run_ids)
        return reply.removed

    async def purge_run_events(self, job: Job) -> dict[str, int]:
        purged = 0
        for run_id in job.run_ids:
            answer = await self._api(
                f"$JS.API.STREAM.PURGE.{subjects.RUN_EVENTS_STREAM}",
                {"filter": subjects.run_events(run_id)},
            )
            purged += int(answer.get("purged", 0))
        return {f"stream:{subjects.RUN_EVENTS_STREAM}": purged}

    def _scan(self, stream: str) -> Step:
        async def scan(job: Job) -> dict[str, int]:
            marks = [r.encode() for r in job.run_ids]
            if job.whole_tenant:  # as in a message, and as quoted inside a dead letter
                t = job.tenant_id
                marks += [f'"tenant_id":"{t}"'.encode(), f'\\"tenant_id\\":\\"{t}\\"'.encode()]
            return {f"stream:{stream}": await delete_matching(self.js, stream, marks)}

        return scan

    def _service(self, service: Answerer) -> Step:
        async def erase(job: Job) -> dict[str, int]:
            return (await self.ask(service, self.request())).removed

        return erase

    async def verify(self, job: Job) -> dict[str, int]:
        left = [r for r in job.run_ids if await count_subject(self.js, subjects.run_events(r))]
        if left:
            # An event appended meanwhile (a run that was still ending): purge again.
            await self.purge_run_events(Job(job.erasure_id, job.tenant_id, False, left))
            raise ErasureError(
                f"{len(left)} run(s) had new events during the erasure; run it again"
            )
        return {}

    async def _api(self, subject: str, body: dict[str, Any]) -> dict[str, Any]:
        msg = await self.nc.request(subject, json.dumps(body).encode(), timeout=10)
        answer: dict[str, Any] = json.loads(msg.data)
        if answer.get("error"):
            raise ErasureError(f"{subject}: {answer['error'].get('description')}")
        return answer


async def count_subject(js: JetStreamContext, subject: str) -> int:
    """Messages the RUN_EVENTS stream holds on `subject`."""
    info = await js.stream_info(subjects.RUN_EVENTS_STREAM, subjects_filter=subject)
    return sum((info.state.subjects or {}).values())


async def delete_matching(js: JetStreamContext, stream: str, marks: list[bytes]) -> int:
    """Delete every message of `stream` whose body or subject holds one of `marks`; returns
    how many. Reads by sequence (a work queue admits no second consumer), up to the last
    sequence when the scan began."""
    if not marks:
        return 0
    try:
        info = await js.stream_info(stream)
    except NotFoundError:
        return 0
    deleted = 0
    first, last = info.state.first_seq, info.state.last_seq
    for seq in range(first, last + 1) if info.state.messages else ():
        try:
            msg = await js.get_msg(stream, seq)
        except NotFoundError:
            continue
        body = (msg.data or b"") + (msg.subject or "").encode()
        if any(m in body for m in marks):
            try:
                await js.delete_msg(stream, seq)
                deleted += 1
            except NotFoundError:
                continue
    return deleted


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


# -- the services' side: each removes its own rows ---------------------------------------------


@dataclass(frozen=True)
class Owned:
    """A table of the service's own schema and how its rows name a run and a tenant."""

    table: str
    run_column: str | None = "run_id"
    """None: the rows belong to no run (only a whole tenant's erasure removes them)."""
    tenant_column: str | None = "tenant_id"


async def erase_rows(
    conn: asyncpg.Connection, schema: str, tables: Sequence[Owned], req: EraseRequest
) -> dict[str, int]:
    """Delete the request's rows from `tables`, in order, in one transaction; counts by
    `<schema>.<table>` (tables with nothing removed included: the report lists every one)."""
    removed: dict[str, int] = {}
    async with conn.transaction():
        for t in tables:
            status = "DELETE 0"
            if req.whole_tenant and t.tenant_column:
                status = await conn.execute(
                    f"DELETE FROM {t.table} WHERE {t.tenant_column} = $1", req.tenant_id
                )
            elif t.run_column and req.run_ids:
                where = f"{t.run_column} = ANY($1::text[])"
                args: list[Any] = [list(req.run_ids)]
                if t.tenant_column:
                    where += f" AND {t.tenant_column} = $2"
                    args.append(req.tenant_id)
                status = await conn.execute(f"DELETE FROM {t.table} WHERE {where}", *args)
            removed[f"{schema}.{t.table}"] = int(status.split()[-1])
    return removed
