"""A run's events: SSE (history then live, resumable) and JSON pages of the same history.

`GET /v1/runs/{id}/events`: `event:` the type, `data:` the stored event bytes, `id:` an
opaque durable cursor. Resumes from `Last-Event-ID` (header, wins) or `?last_event_id=`;
without a cursor the whole history, then live; closes after the terminal event.
`?format=json&after=<cursor>&limit=<n>` pages the same history.

The plain stream (no parameter but the cursor and a stream token, no body) is answered by
`Streams`, the outermost ASGI layer (ahead of every middleware and FastAPI's routing): an idle
client then holds no middleware or route frames, dependency exit stacks or send wrappers for
as long as it streams (about half of its memory). It calls the same functions as the route
(`principal`, `usecases.open_stream`, `Problem`) and the middleware (`_edge.unexpected_error`,
`responding`/`answered`); every other request goes on to the middleware and the
route, which also documents the path in OpenAPI.
"""

from __future__ import annotations

import re
import time
from typing import Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Request
from runloom.contracts import subjects
from runloom.contracts.types import RUN_ID
from runloom.gateway import usecases
from runloom.gateway._edge import answered, has_body, responding, unexpected_error
from runloom.gateway._params import RunIdPath
from runloom.gateway._sse import Raw
from runloom.gateway.auth import Principal, api_only, principal
from runloom.gateway.problems import UNAVAILABLE, Problem, responses, unavailable
from runloom.gateway.state import GatewayState, get_state, streaming
from runloom.gateway.store import archive
from starlette.datastructures import QueryParams

router = APIRouter(tags=["events"])


_SSE_RESPONSES = responses(400, 404, 429)
_SSE_RESPONSES[200] = {
    "description": "Server-sent events (default), or a JSON page with `format=json`.",
    "content": {"text/event-stream": {}, "application/json": {}},
}


PATH = "/v1/runs/{run_id}/events"
MAX_CURSOR = 300
"""The longest cursor a client may send (query parameters)."""


@router.get(PATH, response_model=None, responses=_SSE_RESPONSES)
async def run_events(
    run_id: RunIdPath,
    request: Request,
    state: GatewayState = Depends(get_state),
    who: Principal = Depends(principal),
    last_event_id_header: str | None = Header(default=None, alias="Last-Event-ID"),
    last_event_id: str | None = Query(default=None, max_length=MAX_CURSOR),
    format: Literal["sse", "json"] = "sse",
    after: str | None = Query(default=None, max_length=MAX_CURSOR),
    limit: int = Query(default=500, ge=1, le=5000),
) -> Any:
    """Stream the run's events (SSE), or page them (`format=json`)."""
    if format == "json":
        return await usecases.page_events(
            state, who, run_id, after, limit, resume_from=last_event_id_header or last_event_id
        )
    return Raw(
        await usecases.open_stream(state, who, run_id, last_event_id_header or last_event_id)
    )


_STREAM_PATH = re.compile(r"/v1/runs/([^/]+)/events")
_RUN_ID = re.compile(RUN_ID.pattern)
_STREAM_PARAMS = frozenset({"last_event_id", "token", "format"})
_ROUTE = next(r for r in router.routes if getattr(r, "path", None) == PATH)


def _plain_stream(scope: Any) -> tuple[str, str | None] | None:
    """(run id, cursor parameter) when the request is a plain SSE request the route would take
    as is; None sends it on to the route (which validates and answers everything else)."""
    if scope["type"] != "http" or scope["method"] != "GET" or has_body(scope):
        return None  # a body: `Edge` holds it to the route's limit
    match = _STREAM_PATH.fullmatch(scope["path"])
    if match is None or not _RUN_ID.match(match[1]):
        return None
    params = QueryParams(scope["query_string"])
    cursor = params.get("last_event_id")
    if (
        not _STREAM_PARAMS.issuperset(params.keys())
        or params.get("format", "sse") != "sse"
        or (cursor is not None and len(cursor) > MAX_CURSOR)
    ):
        return None
    return match[1], cursor


class Streams:
    """The outermost ASGI layer: answers plain `GET /v1/runs/{id}/events` streams ahead of
    every middleware, doing for them what `Edge` would (its logged 500, its
    timing and count); everything else goes on to the middleware stack unchanged."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        plain = _plain_stream(scope)
        if plain is None:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        scope["route"] = _ROUTE  # as the router sets it (request metrics name the route)
        try:
            answer = await _answer(scope, *plain)
        except Exception:
            failure = unexpected_error(scope)
            responding(scope, started)
            for message in failure:
                await send(message)
            answered(scope, 500)
            return
        responding(scope, started)
        try:
            await answer(scope, receive, send)
        finally:
            answered(scope, getattr(answer, "status_code", 200))


async def _answer(scope: Any, run_id: str, cursor: str | None) -> Any:
    """The stream, or the problem the route would answer (an ASGI app either way)."""
    request = Request(scope)
    try:
        state = get_state(request)
        who = await principal(request, state)
        return await usecases.open_stream(
            state, who, run_id, request.headers.get("last-event-id") or cursor
        )
    except Problem as problem:
        return problem.response(request.url.path)
    except UNAVAILABLE as exc:  # the event store or the database away: 503, as elsewhere
        return unavailable(exc).response(request.url.path)


@router.get("/metrics/streaming", responses=responses())
async def streaming_metrics(
    state: GatewayState = Depends(get_state), who: Principal = Depends(principal)
) -> dict[str, Any]:
    """This replica's streaming figures (counts only, no tenant data) and the archive's lag.

    Needs an API key (any tenant's) until the management port serves metrics."""
    api_only(who)
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
        "frames_pushed": s.hub.pushed,
        "gaps_repaired": s.hub.gaps_repaired,
        "stalled_clients_cut": s.hub.stalled_cut,
        "archive_lag_events": lag,
        "draining": s.hub.draining,
    }
