"""AG-UI over HTTP: `POST /v1/agui` runs an agent turn, `GET /v1/agui/runs/{id}` resumes.

Same auth and tenancy as the rest of the API (`Authorization: Bearer <key>`). A POST with a
`RunAgentInput` starts a run from the last user message (or, with `resume`, answers the
thread's open interrupt and continues that same run) and answers one AG-UI run as SSE. The
thread is the AG-UI `threadId`: each run started from it records it (`options.agui`), and the
newest run of a thread is the one an interrupt or a resume concerns.

Every frame carries an SSE `id` that is a durable cursor (see `_stream`), so
`GET /v1/agui/runs/{runId}` with `Last-Event-ID` (or `?last_event_id=`) continues exactly after
it: across gateway restarts, after the run ended, past the hot window (the archive serves it).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Header, Query
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from runloom.contracts.types import RUN_ID, now, rfc3339
from runloom.gateway import _cursor, usecases
from runloom.gateway._sse import HEADERS, Raw
from runloom.gateway.agui._mapping import ANSWER_SCHEMA, transcript
from runloom.gateway.agui._stream import WHOLE, Position, Renderer, encode, parse_id
from runloom.gateway.agui._view import PROTOCOL_VERSION
from runloom.gateway.auth import Principal, api_only, principal
from runloom.gateway.problems import Problem, not_found, responses
from runloom.gateway.state import GatewayState, get_state
from runloom.gateway.usecases import ClarificationIn, RunIn
from runloom.runtime.runstate import RunState, fold

router = APIRouter(tags=["agui"])

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,199}$"


# -- RunAgentInput, as much of it as a run needs (the rest is accepted and ignored) ----------


class _Message(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str = Field(max_length=200)
    role: str = Field(max_length=20)
    content: str | list[dict[str, Any]] | None = Field(default=None, max_length=200_000)


class _Resume(BaseModel):
    model_config = ConfigDict(extra="forbid")

    interruptId: str = Field(max_length=200)
    status: str = Field(pattern="^(resolved|cancelled)$")
    payload: Any = None
    metadata: dict[str, Any] | None = None


class RunAgentInput(BaseModel):
    """AG-UI's `RunAgentInput` (camelCase, as on the wire)."""

    model_config = ConfigDict(extra="allow")

    threadId: str = Field(pattern=ID_PATTERN)
    runId: str = Field(pattern=ID_PATTERN)
    protocolVersion: str | None = Field(default=None, max_length=20)
    parentRunId: str | None = Field(default=None, max_length=200)
    messages: list[_Message] = Field(max_length=1000)
    state: Any = None
    tools: list[dict[str, Any]] | None = None
    context: list[dict[str, Any]] | None = None
    forwardedProps: dict[str, Any] | None = None
    resume: list[_Resume] | None = Field(default=None, max_length=100)


def _text(message: _Message) -> str:
    if isinstance(message.content, str):
        return message.content
    parts = message.content or []
    return "\n".join(str(p.get("text", "")) for p in parts if p.get("type") == "text")


def _run_in(body: RunAgentInput) -> RunIn | str:
    """The run a RunAgentInput asks for, or why it asks for none."""
    users = [m for m in body.messages if m.role == "user" and _text(m).strip()]
    if not users:
        return "RunAgentInput.messages holds no user message with text: nothing to run."
    props = body.forwardedProps or {}
    options: dict[str, Any] = {
        "agui": {"thread_id": body.threadId, "run_id": body.runId, "message_id": users[-1].id}
    }
    if props.get("deliverables") is not None:
        options["deliverables"] = props["deliverables"]
    try:
        return RunIn(
            question=_text(users[-1]),
            skill=props.get("skill"),
            budget_usd=props.get("budget_usd", props.get("budgetUsd")),
            options=options,
        )
    except ValueError as exc:
        return f"forwardedProps are not usable: {exc}"


# -- streams ----------------------------------------------------------------------------------


def _error_stream(message: str, code: str) -> Response:
    """An AG-UI answer that is only a RUN_ERROR (the spec's way to refuse a RunAgentInput)."""

    async def body() -> AsyncIterator[bytes]:
        yield encode({"type": "RUN_ERROR", "message": message, "code": code}, None)

    return StreamingResponse(body(), headers={k.decode(): v.decode() for k, v in HEADERS})


async def _stream(
    state: GatewayState,
    who: Principal,
    run_id: str,
    after: Position | None = None,
    *,
    one_part: bool = False,
    lease: str | None = None,
) -> Response:
    """The run as AG-UI SSE; it holds one of the tenant's `sse_streams` places while open."""
    try:
        renderer = Renderer(run_id, after, one_part=one_part, history=await _history(state, run_id))
    except BaseException:
        if lease is not None:
            await usecases.release_stream(state, lease)
        raise
    return Raw(
        await usecases.follow(
            state, who, run_id, None, render=renderer.render, until=renderer.until, lease=lease
        )
    )


HISTORY_RUNS = 20
"""How many earlier runs of a thread its MESSAGES_SNAPSHOT carries."""


async def _history(state: GatewayState, run_id: str) -> list[dict[str, Any]]:
    """The messages of the earlier runs of this run's AG-UI thread, oldest first."""
    messages: list[dict[str, Any]] = []
    for earlier in await usecases.earlier_in_thread(state, run_id, HISTORY_RUNS):
        messages += transcript(await state.log.events(earlier))
    return messages


# -- routes -----------------------------------------------------------------------------------


_STREAM = responses(400, 404)
_STREAM[200] = {
    "description": "AG-UI events as server-sent events.",
    "content": {"text/event-stream": {}},
}


@router.get("/v1/agui/capabilities", responses=responses())
async def capabilities(who: Principal = Depends(principal)) -> dict[str, Any]:
    """AG-UI `AgentCapabilities`: what this agent does, `transport.resumable` included."""
    return {
        "identity": {
            "name": "Runloom",
            "type": "runloom",
            "description": "Plans, researches a corpus, writes a cited report, delivers it.",
        },
        "transport": {"streaming": True, "resumable": True},
        "state": {"snapshots": True, "deltas": True, "persistentState": True},
        "multiAgent": {"supported": True, "subagents": [{"name": "research"}]},
        "humanInTheLoop": {"supported": True, "interrupts": True},
        "custom": {
            "runloom:resume": {
                "protocolVersion": PROTOCOL_VERSION,
                "url": "/v1/agui/runs/{runId}",
                "cursor": "the SSE id of the last event received, as Last-Event-ID "
                "(or ?last_event_id=); none for the whole run",
            }
        },
    }


@router.post("/v1/agui", response_model=None, responses=_STREAM)
async def run_agent(
    body: RunAgentInput,
    state: GatewayState = Depends(get_state),
    who: Principal = Depends(principal),
) -> Response:
    """Run an agent turn (AG-UI): a new run from the last user message, or a resume."""
    api_only(who)
    current = await usecases.thread_run(state, who, body.threadId)
    rs = fold(await state.log.events(current) if current else [])
    if body.resume:
        # The stream's place before the answer is written (released if no stream follows).
        lease = await usecases.stream_slot(state, who)
        try:
            answer = await _resume(state, who, body, current, rs, lease)
        except BaseException:
            await usecases.release_stream(state, lease)
            raise
        if not isinstance(answer, Raw):
            await usecases.release_stream(state, lease)
        return answer
    if current is not None and (rs.options.get("agui") or {}).get("run_id") == body.runId:
        return await _stream(state, who, current, one_part=True)  # the same input again
    if rs.clarification is not None and current is not None:
        return _error_stream(
            f"Thread {body.threadId} has an open interrupt (run {current} asks: "
            f"{rs.clarification.question!r}); answer it with RunAgentInput.resume first.",
            "interrupt_pending",
        )
    run_in = _run_in(body)
    if isinstance(run_in, str):
        return _error_stream(run_in, "invalid_input")
    # The stream's place first: a POST refused for the tenant's open streams stores nothing.
    lease = await usecases.stream_slot(state, who)
    try:
        created = await usecases.create_run(
            state, who, run_in, idempotency_key=f"agui:{body.threadId}:{body.runId}"
        )
    except BaseException:
        await usecases.release_stream(state, lease)
        raise
    return await _stream(state, who, created.run_id, one_part=True, lease=lease)


async def _resume(
    state: GatewayState,
    who: Principal,
    body: RunAgentInput,
    run_id: str | None,
    rs: RunState,
    lease: str,
) -> Response:
    """Answer the thread's interrupt (the run's clarification) and continue that run, as a
    stream holding `lease`."""
    resume = body.resume or []
    unknown = [r.interruptId for r in resume if rs.asked(r.interruptId) is None]
    if run_id is None or unknown:
        return _error_stream(
            f"Thread {body.threadId} has no interrupt {', '.join(unknown) or '(none)'}: "
            "resume entries must name the interrupts of the thread's last run.",
            "unknown_interrupt",
        )
    if len({r.interruptId for r in resume}) != len(resume):
        return _error_stream("Each interrupt may be answered once per resume.", "invalid_resume")
    entry = resume[-1]
    question = rs.asked(entry.interruptId)
    assert question is not None
    open_id = rs.clarifications[-1].event_id if rs.clarification is not None else None
    if (open_id is not None and entry.interruptId != open_id) or len(resume) > 1:
        return _error_stream(
            f"The open interrupt is {open_id}; a resume must answer it, and only it.",
            "interrupt_not_covered",
        )
    answer = _answer_of(entry)
    if open_id is None:
        # Already resolved: a replay of the same resume is safe, another answer is not.
        done = question.answered_seq
        if done is not None and entry.status == "resolved" and question.answer == answer:
            return await _stream(
                state, who, run_id, Position(done - 1, WHOLE), one_part=True, lease=lease
            )
        return _error_stream(
            f"Interrupt {entry.interruptId} is no longer open (the run is {rs.status}).",
            "interrupt_resolved",
        )
    deadline = question.request.deadline
    if deadline is not None and deadline < now():
        return _error_stream(
            f"Interrupt {entry.interruptId} expired at {rfc3339(deadline)}.", "interrupt_expired"
        )
    if entry.status == "cancelled":
        tail = await state.log.tail(run_id)
        try:
            await usecases.cancel_run(
                state,
                who,
                run_id,
                "the interrupt was cancelled",
                requested_by="agui",
                event_id=f"{run_id}:agui-cancel:{entry.interruptId}",
            )
        except Problem as problem:
            if problem.status != 409:  # 409: it has already ended, nothing to cancel
                raise
        return await _stream(state, who, run_id, Position(tail.run_seq, WHOLE), lease=lease)
    if answer is None:
        return _error_stream(
            f"resume.payload must match {json.dumps(ANSWER_SCHEMA)} (or be the answer text).",
            "invalid_resume_payload",
        )
    try:
        answered = await usecases.answer_clarification(
            state, who, run_id, ClarificationIn(answer=answer).answer
        )
    except Problem as problem:
        return _error_stream(str(problem.detail), "interrupt_resolved")
    except ValueError as exc:
        return _error_stream(str(exc), "invalid_resume_payload")
    position = Position(answered.seq - 1, WHOLE)
    return await _stream(state, who, run_id, position, one_part=True, lease=lease)


def _answer_of(entry: _Resume) -> str | None:
    payload = entry.payload
    if isinstance(payload, dict):
        payload = payload.get("answer")
    if isinstance(payload, str) and payload.strip() and len(payload) <= 5000:
        return payload.strip()
    return None


@router.get("/v1/agui/runs/{run_id}", response_model=None, responses=_STREAM)
async def run_stream(
    run_id: str,
    state: GatewayState = Depends(get_state),
    who: Principal = Depends(principal),
    last_event_id_header: str | None = Header(default=None, alias="Last-Event-ID"),
    last_event_id: str | None = Query(default=None, max_length=320),
) -> Response:
    """A run as AG-UI events: the whole run, or exactly what follows an event id."""
    if not RUN_ID.matches(run_id):
        raise not_found("run", run_id)
    await usecases.load_run(state, who, run_id)
    text = last_event_id_header or last_event_id
    position = None
    if text:
        try:
            cursor, index = parse_id(text)
        except _cursor.CursorError as exc:
            raise Problem(400, "Bad cursor", str(exc)) from None
        after_seq, _ = await usecases.stream_position(state, run_id, cursor.encode())
        position = Position(after_seq, index)
    return await _stream(state, who, run_id, position)
