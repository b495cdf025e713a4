"""A run's events: SSE (history then live, resumable) and JSON pages of the same history.

`GET /v1/runs/{id}/events`: `event:` the type, `data:` the stored event bytes, `id:` an
opaque durable cursor. Resumes from `Last-Event-ID` (header, wins) or `?last_event_id=`;
without a cursor the whole history, then live; closes after the terminal event.
`?format=json&after=<cursor>&limit=<n>` pages the same history.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import Response
from runloom.contracts import subjects
from runloom.gateway import _cursor
from runloom.gateway._params import RunIdPath
from runloom.gateway._sse import SSEResponse, frames
from runloom.gateway.auth import Principal, principal
from runloom.gateway.problems import Problem, bus_unavailable, responses
from runloom.gateway.routes.runs import _api_only, load_run
from runloom.gateway.state import GatewayState, get_state, streaming
from runloom.runtime import archive

router = APIRouter(tags=["events"])


def _bad_cursor(detail: str) -> Problem:
    return Problem(400, "Bad cursor", detail)


async def _position(state: GatewayState, run_id: str, text: str | None) -> tuple[int, int]:
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
    tail = await state.log.tail(run_id)
    if after_seq > tail.run_seq or (tail.stream_seq and after_stream_seq > tail.stream_seq):
        raise _bad_cursor(
            f"This cursor is from the future: it points at event {after_seq} but the run has "
            f"{tail.run_seq} so far. Send the id of an event you received."
        )
    return after_seq, after_stream_seq


_SSE_RESPONSES = responses(400, 404, 503)
_SSE_RESPONSES[200] = {
    "description": "Server-sent events (default), or a JSON page with `format=json`.",
    "content": {"text/event-stream": {}, "application/json": {}},
}


@router.get("/v1/runs/{run_id}/events", response_model=None, responses=_SSE_RESPONSES)
async def run_events(
    run_id: RunIdPath,
    request: Request,
    state: GatewayState = Depends(get_state),
    who: Principal = Depends(principal),
    last_event_id_header: str | None = Header(default=None, alias="Last-Event-ID"),
    last_event_id: str | None = Query(default=None, max_length=300),
    format: Literal["sse", "json"] = "sse",
    after: str | None = Query(default=None, max_length=300),
    limit: int = Query(default=500, ge=1, le=5000),
) -> Any:
    """Stream the run's events (SSE), or page them (`format=json`)."""
    await load_run(state, who, run_id)
    s = streaming(state)
    if format == "json":
        after_seq, after_stream_seq = await _position(
            state, run_id, after or last_event_id_header or last_event_id
        )
        return await _page(state, run_id, after_seq, after_stream_seq, after, limit)
    if s.hub.draining:
        raise Problem(503, "Shutting down", "This gateway is shutting down; reconnect.")
    try:
        async with asyncio.timeout(s.options.attach_timeout_s):
            after_seq, after_stream_seq = await _position(
                state, run_id, last_event_id_header or last_event_id
            )
            client = await s.hub.attach(run_id)
    except TimeoutError:
        raise bus_unavailable() from None
    body = frames(
        s.hub, s.history, client, run_id, after_seq, after_stream_seq, s.options.heartbeat_s
    )
    return _Raw(SSEResponse(s.hub, client, body))


async def _page(
    state: GatewayState,
    run_id: str,
    after_seq: int,
    after_stream_seq: int,
    after: str | None,
    limit: int,
) -> dict[str, Any]:
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


@router.get("/metrics/streaming", responses=responses())
async def streaming_metrics(
    state: GatewayState = Depends(get_state), who: Principal = Depends(principal)
) -> dict[str, Any]:
    """This replica's streaming figures (counts only, no tenant data) and the archive's lag.

    Needs an API key (any tenant's) until the management port serves metrics."""
    _api_only(who)
    s = streaming(state)
    lag: int | None = None
    try:
        info = await state.js.consumer_info(subjects.RUN_EVENTS_STREAM, archive.DURABLE)
        lag = int(info.num_pending or 0) + int(info.num_ack_pending or 0)
    except Exception:  # no archive consumer yet, or the server is away
        lag = None
    return {
        "sse_clients": s.hub.client_count,
        "runs_followed": len(s.hub.feeds),
        "events_fanned_out": s.hub.delivered,
        "gaps_repaired": s.hub.gaps_repaired,
        "stalled_clients_cut": s.hub.stalled_cut,
        "archive_lag_events": lag,
        "draining": s.hub.draining,
    }


class _Raw(Response):
    """Hands the request over to a bare ASGI app (the SSE stream)."""

    def __init__(self, app: SSEResponse) -> None:
        super().__init__()
        self._app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self._app(scope, receive, send)
