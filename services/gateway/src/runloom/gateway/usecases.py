"""What a client does with runs, whichever door it comes through (the HTTP routes, the AG-UI
adapter, tests): create a run, read and list runs, cancel one, answer its clarification, open
its event stream, page its history.

Each use case takes the gateway's state and the authenticated principal, checks what it must,
writes in the order the rules ask (the run's event first, durably; what follows from it after)
and returns plain values, or raises `Problem`: a typed failure each door renders its own way
(problem+json for HTTP, a RUN_ERROR frame for AG-UI). Routes only translate HTTP: parameters
in, status codes and headers out.

`POST /v1/runs` (`create_run`) answers once `run.created` is durably stored, the read-model
row is in and the start command is stored (those two go out together, after `run.created`).
If those fail it answers 503: a retry with the same Idempotency-Key completes the run; without
a key the run is ended as failed (`run.failed`), since no retry can reach it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec
from pydantic import BaseModel, ConfigDict, Field, field_validator
from runloom.contracts import operations as ops
from runloom.contracts import subjects
from runloom.contracts.commands import DispatchPolicy, EraseRunsRequest, ResumeRun, StartRun
from runloom.contracts.events import (
    CancelRequested,
    ClarificationAnswered,
    Event,
    RunCreated,
    RunFailed,
)
from runloom.contracts.ids import derived_ulid, new_id
from runloom.contracts.kinds import DEFAULT_SKILL, DELIVERABLE_KINDS, RunStatus
from runloom.contracts.types import (
    JSON_MAX_BYTES,
    JSON_MAX_DEPTH,
    MAX_USD,
    RUN_ID,
    InvalidValue,
    check_text,
    rfc3339_or_none,
)
from runloom.gateway import _cursor, _webhooks, quotas, waiting
from runloom.gateway._history import Frame
from runloom.gateway._params import JsonObject, NonBlankText, StorableText, Usd, text
from runloom.gateway._sse import SSEResponse, frames
from runloom.gateway._telemetry import in_run_trace
from runloom.gateway._titles import title_of
from runloom.gateway.auth import Principal
from runloom.gateway.problems import (
    BUS_UNAVAILABLE,
    DATABASE_UNAVAILABLE,
    RETRY_AFTER_S,
    Problem,
    answer_of,
    bus_unavailable,
    not_found,
)
from runloom.gateway.state import GatewayState, streaming
from runloom.gateway.store import archive
from runloom.gateway.store import erasure as erasure_store
from runloom.runtime import bus
from runloom.runtime.eventlog import RunClosed, Tail
from runloom.runtime.runstate import fold

log = logging.getLogger(__name__)


# -- what a client sends ----------------------------------------------------------------------


class RunIn(BaseModel):
    """What a client may send to start a run (the tenant comes from the API key)."""

    model_config = ConfigDict(extra="forbid")

    question: NonBlankText = text(20_000, "What the run should answer.", nonblank=True)
    skill: str | None = Field(
        default=None, max_length=100, pattern=r"^[a-z][a-z0-9_]*$", description="Plan template."
    )
    budget_usd: Usd | None = Field(
        default=None, description=f"Spending cap for the run, 0 to {MAX_USD:,} USD."
    )
    options: JsonObject = Field(
        default_factory=dict,
        description=f"Free-form options (at most {JSON_MAX_BYTES // 1024} KiB of JSON, "
        f"{JSON_MAX_DEPTH} levels deep); `deliverables`: a list of report|website|slides.",
    )

    @field_validator("options")
    @classmethod
    def _options(cls, value: dict[str, Any]) -> dict[str, Any]:
        kinds = value.get("deliverables")
        if kinds is not None:
            if not isinstance(kinds, list) or not all(isinstance(k, str) for k in kinds):
                raise ValueError("options.deliverables must be a list of report|website|slides")
            unknown = sorted(set(kinds) - set(DELIVERABLE_KINDS))
            if unknown:
                raise ValueError(
                    f"options.deliverables has unknown kind(s) {unknown}; "
                    f"choose among {list(DELIVERABLE_KINDS)}"
                )
            value = {**value, "deliverables": list(dict.fromkeys(kinds))}
        return value

    webhook: str | None = Field(
        default=None,
        min_length=1,
        max_length=_webhooks.MAX_URL_CHARS,
        description="An https URL that gets this run's events (run.*, clarification.requested, "
        "deliverable.*) as signed webhooks; the answer's `webhook.secret` verifies them.",
    )


class CancelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: StorableText | None = text(2000, "Why the run is cancelled.", optional=True)


class ClarificationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    answer: NonBlankText = text(5000, "The answer to the run's question.", nonblank=True)


# -- reading runs -----------------------------------------------------------------------------


RUN_COLUMNS = (
    "id, tenant_id, question, title, skill, status, budget_usd, options, last_seq, event_count,"
    " source_count, step_count, spent_usd, partial, missing, error, cancel_requested,"
    " terminal_type, started_count, created_at, started_at, ended_at, updated_at,"
    " stalled_reason, stalled_detail, stalled_retry_at, stalled_after_seq"
)


def run_view(row: asyncpg.Record) -> dict[str, Any]:
    """A run as the API shows it."""
    return {
        "id": row["id"],
        "status": row["status"],
        "question": row["question"],
        "title": row["title"],
        "skill": row["skill"],
        "budget_usd": None if row["budget_usd"] is None else float(row["budget_usd"]),
        "spent_usd": float(row["spent_usd"]),
        "options": row["options"],
        "created_at": rfc3339_or_none(row["created_at"]),
        "started_at": rfc3339_or_none(row["started_at"]),
        "ended_at": rfc3339_or_none(row["ended_at"]),
        "updated_at": rfc3339_or_none(row["updated_at"]),
        "last_seq": row["last_seq"],
        "event_count": row["event_count"],
        "step_count": row["step_count"],
        "source_count": row["source_count"],
        "partial": row["partial"],
        "missing": row["missing"],
        "error": row["error"],
        "cancel_requested": row["cancel_requested"],
        "ended_by": row["terminal_type"],
        "stalled": _stalled(row),
        "links": {
            "self": f"/v1/runs/{row['id']}",
            "events": f"/v1/runs/{row['id']}/events",
            "stream_token": f"/v1/runs/{row['id']}/stream-token",
        },
    }


def _stalled(row: asyncpg.Record) -> dict[str, Any] | None:
    """Why the running run is paused with no event saying so, and when it is tried again
    (`runs.stalled`, the event store full); None once a later event is stored or it ended."""
    after = row["stalled_after_seq"]
    if after is None or row["last_seq"] > after or row["terminal_type"] is not None:
        return None
    return {
        "reason": row["stalled_reason"],
        "detail": row["stalled_detail"],
        "retry_at": rfc3339_or_none(row["stalled_retry_at"]),
    }


async def load_run(state: GatewayState, who: Principal, run_id: str) -> asyncpg.Record:
    """The run's row if this principal may see it; 404 otherwise (never 403)."""
    if who.run_scope is not None and who.run_scope != run_id:
        raise not_found("run", run_id)
    row = await state.pool.fetchrow(
        f"SELECT {RUN_COLUMNS} FROM runs WHERE id=$1 AND tenant_id=$2", run_id, who.tenant_id
    )
    if row is None:
        raise not_found("run", run_id)
    return row


def _page_cursor(row: asyncpg.Record) -> str:
    raw = f"{row['created_at'].isoformat()}|{row['id']}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _parse_page_cursor(text: str) -> tuple[datetime, str]:
    """(created_at, run id) of a page cursor; 400 for anything `_page_cursor` did not write."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
        created, _, run_id = raw.partition("|")
        at = datetime.fromisoformat(created)
        if at.tzinfo is None:
            raise ValueError("naive time")
        at = at.astimezone(UTC)  # OverflowError past the calendar's ends
        return at, RUN_ID.check(run_id)
    except (binascii.Error, UnicodeDecodeError, ValueError, OverflowError, InvalidValue):
        raise Problem(
            400, "Bad cursor", "This page cursor is malformed; pass back `next_cursor` as given."
        ) from None


async def list_runs(
    state: GatewayState,
    who: Principal,
    limit: int,
    cursor: str | None = None,
    status: RunStatus | None = None,
) -> dict[str, Any]:
    """The tenant's runs, newest first, a page at a time."""
    created, after_id = _parse_page_cursor(cursor) if cursor else (None, None)
    rows = await state.pool.fetch(
        f"SELECT {RUN_COLUMNS} FROM runs WHERE tenant_id=$1"
        " AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3))"
        " AND ($4::text IS NULL OR status=$4)"
        " ORDER BY created_at DESC, id DESC LIMIT $5",
        who.tenant_id,
        created,
        after_id,
        status,
        limit + 1,
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return {
        "items": [run_view(r) for r in rows],
        "next_cursor": _page_cursor(rows[-1]) if more else None,
    }


async def thread_run(state: GatewayState, who: Principal, thread_id: str) -> str | None:
    """The newest of the tenant's runs started from an AG-UI thread (`options.agui`)."""
    run_id: str | None = await state.pool.fetchval(
        "SELECT id FROM runs WHERE tenant_id=$1 AND options->'agui'->>'thread_id'=$2"
        " ORDER BY created_at DESC, id DESC LIMIT 1",
        who.tenant_id,
        thread_id,
    )
    return run_id


async def earlier_in_thread(state: GatewayState, run_id: str, limit: int) -> list[str]:
    """The runs of this run's AG-UI thread that came before it (at most `limit`, the latest
    ones), oldest first."""
    rows = await state.pool.fetch(
        "SELECT e.id FROM runs r JOIN runs e ON e.tenant_id = r.tenant_id"
        " AND e.options->'agui'->>'thread_id' = r.options->'agui'->>'thread_id'"
        " AND (e.created_at, e.id) < (r.created_at, r.id)"
        " WHERE r.id = $1 ORDER BY e.created_at DESC, e.id DESC LIMIT $2",
        run_id,
        limit,
    )
    return [row["id"] for row in reversed(rows)]


# -- creating a run ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Created:
    row: asyncpg.Record
    """The run's read-model row."""
    replay: bool
    """True when an earlier request with the same Idempotency-Key made the run."""
    webhook: dict[str, Any] | None = None
    """The run's own webhook endpoint (`id`, `url`, `secret`), when the request named one."""

    @property
    def run_id(self) -> str:
        return str(self.row["id"])


async def create_run(
    state: GatewayState, who: Principal, body: RunIn, idempotency_key: str | None
) -> Created:
    """Start a run. With an idempotency key, the same key and body return the same run.

    Everything is validated before the first write. The writes go in an order a retry with
    the same key completes: key, `run.created`, then the read-model row and the start command.
    A tenant whose queue is full gets 429 before anything is written. A `webhook` URL is
    checked first too; the run's endpoint is made before `run.created`."""
    await _webhooks.check_run_webhook(state, who, body.webhook)
    run_id = new_id("run")
    quota = await quotas.admit_run(state.pool, who.tenant_id, run_id, idempotency_key)
    try:
        return await _create(state, who, body, idempotency_key, run_id, quota)
    finally:
        await quotas.admitted(state.pool, run_id)


async def _create(
    state: GatewayState,
    who: Principal,
    body: RunIn,
    idempotency_key: str | None,
    run_id: str,
    quota: quotas.Limits,
) -> Created:
    request = body.model_dump(mode="json")
    request_hash = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()
    replay = False
    if idempotency_key is not None:
        key = check_text(idempotency_key, "Idempotency-Key")
        inserted = await state.pool.fetchval(
            "INSERT INTO idempotency_keys(tenant_id, key, request_hash, run_id)"
            " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING run_id",
            who.tenant_id,
            key,
            request_hash,
            run_id,
        )
        if inserted is None:
            prior = await state.pool.fetchrow(
                "SELECT request_hash, run_id FROM idempotency_keys WHERE tenant_id=$1 AND key=$2",
                who.tenant_id,
                key,
            )
            if prior["request_hash"] != request_hash:
                raise Problem(
                    422,
                    "Idempotency-Key reused",
                    f"Idempotency-Key {key!r} was already used with a different request body "
                    f"(run {prior['run_id']}). Use a new key for a different request.",
                    run_id=prior["run_id"],
                )
            run_id, replay = prior["run_id"], True
    created = RunCreated(
        question=body.question,
        skill=body.skill or DEFAULT_SKILL,
        budget_usd=body.budget_usd,
        options=body.options,
        title=title_of({"question": body.question}),
        idempotency_key=idempotency_key,
    )
    # A replay finishes whatever the first request may not have (it may have crashed).
    if not replay:
        state.log.expect_new(run_id)  # a fresh id: no tail to read before the first append
    hook = await _webhooks.for_run(state, who, run_id, body.webhook)  # before run.created
    if not (replay and await state.log.first(run_id) is not None):
        # One id per run: concurrent replays of the same key append it once.
        await state.log.append(run_id, who.tenant_id, created, event_id=derived_ulid(run_id))
    # run.created is durable: the read-model row and the start command go out together.
    try:
        inserted = await _row_and_start(state, who, created, run_id, quota.dispatch())
    except (*BUS_UNAVAILABLE, *DATABASE_UNAVAILABLE):
        if idempotency_key is None:  # no retry can complete this run: end it, say so
            await _not_started(state, who, run_id)
        raise
    # Already there (a replay, or the archive projected run.created first): read it.
    row = inserted if inserted is not None else await load_run(state, who, run_id)
    return Created(row, replay, hook)


async def _row_and_start(
    state: GatewayState,
    who: Principal,
    created: RunCreated,
    run_id: str,
    dispatch: DispatchPolicy,
) -> asyncpg.Record | None:
    """The read-model row (None if it was there) and the start command, together."""
    inserted, _ = await asyncio.gather(
        archive.insert_run(
            state.pool,
            run_id,
            who.tenant_id,
            msgspec.structs.asdict(created),
            returning=RUN_COLUMNS,
        ),
        bus.publish(
            state.js,
            subjects.START_RUN,
            StartRun(
                command_id=f"start-{run_id}",
                run_id=run_id,
                tenant_id=who.tenant_id,
                dispatch=dispatch,
            ),
            msg_id=f"start-{run_id}",
        ),
    )
    return inserted


async def _not_started(state: GatewayState, who: Principal, run_id: str) -> None:
    """End a run whose start failed and that no retry can reach (it had no Idempotency-Key):
    `run.failed`, so it is not left "created" for good, and a start command that did get out
    (the read-model row was what failed) finds it ended instead of running beside the
    client's retry. Then a 503 that names it; if even this append fails, the caller's 503
    stands and the run stays "created"."""
    failed = RunFailed(
        error="Not started: a server did not answer while the run was being started, and the "
        "request that made it had no Idempotency-Key to finish it with. Send the request again.",
    )
    try:
        await state.log.append(
            run_id, who.tenant_id, failed, event_id=derived_ulid(f"{run_id}/not-started")
        )
    except RunClosed:
        return  # it had already ended (its start got out and it ran): nothing to say
    except BUS_UNAVAILABLE as exc:
        log.warning("run %s: start failed and so did marking it failed: %r", run_id, exc)
        return
    problem = Problem(
        503,
        "Service Unavailable",
        f"Run {run_id} could not be started (the event store or the database did not "
        f"answer) and was ended as failed. Send the request again in "
        f"{RETRY_AFTER_S} s; with an Idempotency-Key, a retry completes the same run instead.",
        run_id=run_id,
    )
    problem.headers["Retry-After"] = str(RETRY_AFTER_S)
    raise problem


# -- cancelling, answering --------------------------------------------------------------------


_ENDED_WORDS = {
    "run.completed": "completed",
    "run.failed": "failed",
    "run.cancelled": "was already cancelled",
    "run.budget_stopped": "was stopped by its budget",
}


async def cancel_run(
    state: GatewayState,
    who: Principal,
    run_id: str,
    reason: str | None,
    *,
    requested_by: str = "api",
    event_id: str | None = None,
) -> Event:
    """Ask the run to stop (accepted even before it started); it answers with run.cancelled.
    409 when it has already ended. A run nobody has started yet ends at once."""
    row = await load_run(state, who, run_id)
    try:
        async with in_run_trace(state.log, run_id, "cancel run"):
            asked = await state.log.append(
                run_id,
                who.tenant_id,
                CancelRequested(reason=reason, requested_by=requested_by),
                event_id=event_id,
            )
            if waiting.not_started(row):  # queued: nobody works on it to hear the cancel
                await waiting.end_waiting(state.log, who.tenant_id, run_id, asked)
            return asked
    except RunClosed as closed:
        how, seq = closed.terminal.type, closed.terminal.seq
        raise Problem(
            409,
            "Run already ended",
            f"Run {run_id} has already ended: it {_ENDED_WORDS.get(how, how)} (event {how}, "
            f"seq {seq}). There is nothing left to cancel.",
            ended_by=how,
        ) from None


def _not_waiting(run_id: str, detail: str, status: str) -> Problem:
    return Problem(
        409,
        "Not waiting for an answer",
        detail,
        type="https://runloom.dev/problems/not-waiting-for-clarification",
        run_id=run_id,
        run_status=status,
    )


async def answer_clarification(
    state: GatewayState, who: Principal, run_id: str, answer: str
) -> Event:
    """Answer the run's clarification question (`clarification.answered`, caused by the
    question it answers), then wake an orchestrator replica (`ResumeRun`). 409 when the run
    is not waiting for an answer, saying what it does instead."""
    await load_run(state, who, run_id)  # the id is valid and the run is this tenant's
    events = await state.log.events(run_id)
    if not events or events[0].tenant_id != who.tenant_id:
        raise not_found("run", run_id)
    run = fold(events)
    if run.terminal is not None:
        raise _not_waiting(
            run_id, f"The run already ended ({run.terminal.type}); start a new run.", run.status
        )
    if run.clarification is None:
        raise _not_waiting(
            run_id,
            f"The run is {run.status} and has not asked a question; there is nothing to answer.",
            run.status,
        )
    asked = run.clarifications
    # The answer and the resumed run belong to the run's trace (one per run).
    async with in_run_trace(state.log, run_id, "answer clarification", events[0]):
        try:
            answered = await state.log.append(
                run_id,
                who.tenant_id,
                ClarificationAnswered(answer=answer),
                event_id=f"{run_id}:answer:{len(asked)}",
                causation_id=asked[-1].event_id,
            )
        except RunClosed as exc:
            raise _not_waiting(
                run_id, f"The run ended ({exc.terminal.type}) before the answer arrived.", "ended"
            ) from exc
        if answered.data.get("answer") != answer:
            raise _not_waiting(
                run_id, "The question was already answered by another request.", "running"
            )
        await bus.publish(
            state.js,
            subjects.RESUME_RUN,
            ResumeRun(
                command_id=new_id("cmd"),
                run_id=run_id,
                tenant_id=who.tenant_id,
                reason="clarification_answered",
                causation_id=answered.id,
            ),
            msg_id=f"resume-{answered.id}",
        )
    return answered


# -- the run's events: stream and pages -------------------------------------------------------


def _bad_cursor(detail: str) -> Problem:
    return Problem(400, "Bad cursor", detail)


async def stream_position(state: GatewayState, run_id: str, text: str | None) -> tuple[int, int]:
    """(after_seq, after_stream_seq) from a client's cursor; 400 with the reason if unusable."""
    if not text:
        return 0, 0
    try:
        cursor = _cursor.decode(text)
    except _cursor.CursorError as exc:
        raise _bad_cursor(str(exc)) from None
    if cursor.run_id != run_id:
        raise _bad_cursor(
            "This cursor belongs to another run. Resume each run with the cursor of its own "
            "stream, or send no cursor for the whole history."
        )
    s = streaming(state)
    after_seq, after_stream_seq = await s.history.position(cursor)

    def future(tail: Tail) -> bool:
        return after_seq > tail.run_seq or bool(
            tail.stream_seq and after_stream_seq > tail.stream_seq
        )

    # Any replica's view first; one behind (back from a pause) must not refuse a good cursor.
    tail = await state.log.tail(run_id, any_replica=True)
    if future(tail) and future(tail := await state.log.tail(run_id)):
        raise _bad_cursor(
            f"This cursor is from the future: it points at event {after_seq} but the run has "
            f"{tail.run_seq} so far. Send the id of an event you received."
        )
    return after_seq, after_stream_seq


async def open_stream(
    state: GatewayState, who: Principal, run_id: str, cursor: str | None
) -> SSEResponse:
    """The run's SSE stream from `cursor`: 404 for a run this principal cannot see, 400 for
    an unusable cursor, 503 while the gateway drains or the event store does not answer."""
    await load_run(state, who, run_id)
    return await follow(state, who, run_id, cursor)


async def stream_slot(state: GatewayState, who: Principal) -> str:
    """A place among the tenant's open streams (429 at its `sse_streams`), taken before a
    request that answers with a stream writes anything; `follow(lease=...)` uses it, and
    `release_stream` gives it back if the request fails first."""
    return await quotas.open_stream(state.pool, who.tenant_id)


async def release_stream(state: GatewayState, lease: str) -> None:
    await quotas.end_stream(state.pool, lease)


async def follow(
    state: GatewayState,
    who: Principal,
    run_id: str,
    cursor: str | None,
    render: Callable[[Frame], bytes] = Frame.sse,
    until: Callable[[Frame], bool] = lambda frame: frame.terminal,
    *,
    lease: str | None = None,
) -> SSEResponse:
    """A client joins the run's feed (a run its caller already may see); its stream
    (`_sse.frames`) starts after the cursor, each frame rendered by `render`. The stream holds
    one of the tenant's `sse_streams` places (`lease`, else one taken now: 429 when none is
    left) until it ends, is cut or the client goes away."""
    s = streaming(state)
    if s.hub.draining:
        if lease is not None:
            await release_stream(state, lease)
        raise Problem(503, "Shutting down", "This gateway is shutting down; reconnect.")
    if lease is None:
        lease = await stream_slot(state, who)
    try:
        async with asyncio.timeout(s.options.attach_timeout_s):
            after_seq, after_stream_seq = await stream_position(state, run_id, cursor)
            client = await s.hub.attach(run_id)
    except BaseException as exc:
        await release_stream(state, lease)
        if isinstance(exc, TimeoutError):
            raise bus_unavailable() from None
        raise
    body = frames(
        s.hub,
        s.history,
        client,
        run_id,
        after_seq,
        after_stream_seq,
        s.options.heartbeat_s,
        render=render,
        until=until,
    )
    return SSEResponse(s.hub, client, quotas.Leased(state.pool, lease, body))


async def page_events(
    state: GatewayState,
    who: Principal,
    run_id: str,
    after: str | None,
    limit: int,
    *,
    resume_from: str | None = None,
) -> dict[str, Any]:
    """A JSON page of the run's history after the cursor `after` (else `resume_from`, a stream's
    last event id): the frames the stream sends; `done` once it reaches the terminal event."""
    await load_run(state, who, run_id)
    after_seq, after_stream_seq = await stream_position(state, run_id, after or resume_from)
    s = streaming(state)
    items: list[dict[str, Any]] = []
    next_cursor = after
    done = False
    replay = s.history.replay(run_id, after_seq, after_stream_seq)
    try:
        async for frame in replay:
            items.append(frame.json_item())
            next_cursor = frame.cursor
            if frame.terminal:
                done = True
                break
            if len(items) >= limit:
                break
    finally:
        await replay.aclose()  # type: ignore[attr-defined]
    if not items and after_seq:
        tail = await state.log.tail(run_id)
        done = tail.terminal is not None and tail.run_seq <= after_seq
    return {"events": items, "next_cursor": next_cursor, "done": done}


# -- erasure and retention ----------------------------------------------------------------------


async def erase_run(state: GatewayState, who: Principal, run_id: str) -> dict[str, Any]:
    """Erase the tenant's own ended run everywhere: the gateway checks (the tenant sees the
    run, the run has ended: 409 while it goes on), the lifecycle service runs the resumable
    erasure job (`lifecycle.erase`; the gateway holds no right to purge). 503 with
    Retry-After (the job recorded, resumed by the next DELETE) if it could not finish now."""
    row = await load_run(state, who, run_id)
    if row["status"] not in erasure_store.ENDED:
        raise Problem(
            409,
            "Run still going",
            f"Run {run_id} is {row['status']}: cancel it (POST /v1/runs/{run_id}/cancel), "
            "wait for run.cancelled, then delete it.",
        )
    request = EraseRunsRequest(tenant_id=who.tenant_id, run_ids=[run_id])
    reply = await answer_of(state.nc, ops.LIFECYCLE_ERASE, request, _lifecycle_away)
    if reply.status != "done":
        raise _erasure_unfinished(
            f"{reply.detail}. The erasure is recorded; DELETE the run again to finish it."
        )
    return {"run_id": run_id, "erasure_id": reply.erasure_id, "removed": reply.removed}


def _lifecycle_away(why: str) -> Problem:
    return _erasure_unfinished(
        f"The lifecycle service, which erases runs, did not answer ({why}): the run is not "
        "erased yet, or its erasure is still going on. DELETE the run again to finish it."
    )


def _erasure_unfinished(detail: str) -> Problem:
    problem = Problem(503, "Erasure not finished", detail)
    problem.headers["Retry-After"] = "5"
    return problem


async def retention_policy(state: GatewayState, who: Principal) -> dict[str, Any]:
    """The tenant's retention policy, in words too."""
    days = await erasure_store.retention_days(state.pool, who.tenant_id)
    return {
        "tenant_id": who.tenant_id,
        "keep_days": days,
        "policy": "keep" if days is None else f"delete runs ended more than {days} days ago",
        "applies_to": "ended runs: their events, archive, read models, deliverables and "
        "artifacts; the month's spend is kept in aggregate for billing",
    }
