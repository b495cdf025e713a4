"""Runs: create (idempotent), list, read, cancel, and stream tokens.

`POST /v1/runs` answers once `run.created` is durably stored, the read-model row is in and
the start command is stored (those two go out together, after `run.created`). If those fail,
it answers 503: a retry with the same Idempotency-Key completes the run; without a key the
run is ended as failed (`run.failed`), since no retry can reach it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import logging
from datetime import UTC, datetime
from typing import Any

import asyncpg
from fastapi import APIRouter, Depends, Header, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from runloom.contracts import subjects
from runloom.contracts.commands import StartRun
from runloom.contracts.events import CancelRequested, RunCreated, RunFailed
from runloom.contracts.ids import derived_ulid, new_id
from runloom.contracts.kinds import DELIVERABLE_KINDS, RunStatus
from runloom.contracts.types import (
    JSON_MAX_BYTES,
    JSON_MAX_DEPTH,
    MAX_USD,
    RUN_ID,
    InvalidValue,
    check_text,
    rfc3339,
)
from runloom.gateway import _webhooks
from runloom.gateway._params import (
    KEY_PATTERN,
    JsonObject,
    NonBlankText,
    RunIdPath,
    StorableText,
    Usd,
    text,
)
from runloom.gateway._telemetry import in_run_trace
from runloom.gateway.auth import Principal, principal
from runloom.gateway.problems import (
    BUS_UNAVAILABLE,
    DATABASE_UNAVAILABLE,
    RETRY_AFTER_S,
    Problem,
    not_found,
    responses,
)
from runloom.gateway.state import GatewayState, get_state, streaming
from runloom.runtime import bus
from runloom.runtime.archive import title_of
from runloom.runtime.eventlog import RunClosed

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/runs", tags=["runs"])


# -- models -----------------------------------------------------------------------------------


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


RUN_COLUMNS = (
    "id, tenant_id, question, title, skill, status, budget_usd, options, last_seq, event_count,"
    " source_count, step_count, spent_usd, partial, missing, error, cancel_requested,"
    " terminal_type, started_count, created_at, started_at, ended_at, updated_at"
)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else rfc3339(value)


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
        "created_at": _iso(row["created_at"]),
        "started_at": _iso(row["started_at"]),
        "ended_at": _iso(row["ended_at"]),
        "updated_at": _iso(row["updated_at"]),
        "last_seq": row["last_seq"],
        "event_count": row["event_count"],
        "step_count": row["step_count"],
        "source_count": row["source_count"],
        "partial": row["partial"],
        "missing": row["missing"],
        "error": row["error"],
        "cancel_requested": row["cancel_requested"],
        "ended_by": row["terminal_type"],
        "links": {
            "self": f"/v1/runs/{row['id']}",
            "events": f"/v1/runs/{row['id']}/events",
            "stream_token": f"/v1/runs/{row['id']}/stream-token",
        },
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


def _api_only(who: Principal) -> None:
    if who.run_scope is not None:
        raise Problem(401, "Unauthorized", "A stream token only opens its run's event stream.")


# -- routes -----------------------------------------------------------------------------------


@router.post("", status_code=201, responses=responses())
async def create_run(
    body: RunIn,
    state: GatewayState = Depends(get_state),
    who: Principal = Depends(principal),
    idempotency_key: str | None = Header(
        default=None,
        pattern=KEY_PATTERN,
        description="The same key and body return the same run (1-200 visible ASCII).",
    ),
) -> JSONResponse:
    """Start a run. With `Idempotency-Key`, the same key and body return the same run.

    Everything is validated before the first write. The writes go in an order a retry with
    the same key completes: key, `run.created`, then the read-model row and the start command."""
    _api_only(who)
    await _webhooks.check_run_webhook(state, who, body.webhook)
    request = body.model_dump(mode="json")
    request_hash = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()
    run_id = new_id("run")
    replay = False
    if idempotency_key is not None:
        key = check_text(idempotency_key, "Idempotency-Key")  # direct callers too (AG-UI)
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
    # A replay finishes whatever the first request may not have (it may have crashed).
    if not replay:
        state.log.expect_new(run_id)  # a fresh id: no tail to read before the first append
    hook = await _webhooks.for_run(state, who, run_id, body.webhook)  # before run.created
    if not (replay and await state.log.first(run_id) is not None):
        created = RunCreated(
            question=body.question,
            skill=body.skill or "research_report",
            budget_usd=body.budget_usd,
            options=body.options,
            title=title_of({"question": body.question}),
            idempotency_key=idempotency_key,
        )
        # One id per run: concurrent replays of the same key append it once.
        await state.log.append(run_id, who.tenant_id, created, event_id=derived_ulid(run_id))
    # run.created is durable: the read-model row and the start command go out together.
    try:
        inserted = await _row_and_start(state, who, body, run_id, idempotency_key)
    except (*BUS_UNAVAILABLE, *DATABASE_UNAVAILABLE):
        if idempotency_key is None:  # no retry can complete this run: end it, say so
            await _not_started(state, who, run_id)
        raise
    # Already there (a replay, or the archive projected run.created first): read it.
    row = inserted if inserted is not None else await load_run(state, who, run_id)
    return JSONResponse(
        run_view(row) | ({"webhook": hook} if hook else {}),
        status_code=200 if replay else 201,
        headers={"Location": f"/v1/runs/{run_id}"},
    )


async def _row_and_start(
    state: GatewayState, who: Principal, body: RunIn, run_id: str, key: str | None
) -> asyncpg.Record | None:
    """The read-model row (None if it was there) and the start command, together."""
    inserted, _ = await asyncio.gather(
        state.pool.fetchrow(
            "INSERT INTO runs(id, tenant_id, question, title, skill, budget_usd, options,"
            " idempotency_key) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
            f" ON CONFLICT (id) DO NOTHING RETURNING {RUN_COLUMNS}",
            run_id,
            who.tenant_id,
            body.question,
            title_of({"question": body.question}),
            body.skill or "research_report",
            body.budget_usd,
            body.options,
            key,
        ),
        bus.publish(
            state.js,
            subjects.START_RUN,
            StartRun(command_id=f"start-{run_id}", run_id=run_id, tenant_id=who.tenant_id),
            msg_id=f"start-{run_id}",
        ),
    )
    return inserted  # type: ignore[no-any-return]


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


@router.get("", responses=responses(400))
async def list_runs(
    state: GatewayState = Depends(get_state),
    who: Principal = Depends(principal),
    limit: int = Query(20, ge=1, le=100),
    cursor: str | None = Query(
        None, max_length=200, description="`next_cursor` of the previous page, as given."
    ),
    status: RunStatus | None = None,
) -> dict[str, Any]:
    """The tenant's runs, newest first, a page at a time."""
    _api_only(who)
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


@router.get("/{run_id}", responses=responses(404))
async def get_run(
    run_id: RunIdPath, state: GatewayState = Depends(get_state), who: Principal = Depends(principal)
) -> dict[str, Any]:
    _api_only(who)
    return run_view(await load_run(state, who, run_id))


def _ended_problem(run_id: str, how: str, seq: int) -> Problem:
    words = {
        "run.completed": "completed",
        "run.failed": "failed",
        "run.cancelled": "was already cancelled",
        "run.budget_stopped": "was stopped by its budget",
    }
    return Problem(
        409,
        "Run already ended",
        f"Run {run_id} has already ended: it {words.get(how, how)} (event {how}, seq {seq}). "
        "There is nothing left to cancel.",
        ended_by=how,
    )


@router.post("/{run_id}/cancel", status_code=202, responses=responses(404, 409))
async def cancel_run(
    run_id: RunIdPath,
    body: CancelIn | None = None,
    state: GatewayState = Depends(get_state),
    who: Principal = Depends(principal),
) -> JSONResponse:
    """Ask the run to stop (accepted even before it started); it answers with run.cancelled."""
    _api_only(who)
    await load_run(state, who, run_id)
    try:
        async with in_run_trace(state.log, run_id, "cancel run"):
            ev = await state.log.append(
                run_id,
                who.tenant_id,
                CancelRequested(reason=body.reason if body else None, requested_by="api"),
            )
    except RunClosed as closed:
        raise _ended_problem(run_id, closed.terminal.type, closed.terminal.seq) from None
    return JSONResponse(
        {"run_id": run_id, "status": "cancel_requested", "event_id": ev.id, "seq": ev.seq},
        status_code=202,
    )


@router.post("/{run_id}/stream-token", status_code=201, responses=responses(404))
async def stream_token(
    run_id: RunIdPath, state: GatewayState = Depends(get_state), who: Principal = Depends(principal)
) -> dict[str, Any]:
    """A short-lived token for `GET /v1/runs/{id}/events?token=...` (EventSource)."""
    _api_only(who)
    await load_run(state, who, run_id)
    token, expires_at = streaming(state).tokens.issue(who.tenant_id, run_id)
    return {
        "token": token,
        "expires_at": _iso(datetime.fromtimestamp(expires_at, tz=UTC)),
        "events_url": f"/v1/runs/{run_id}/events?token={token}",
    }
