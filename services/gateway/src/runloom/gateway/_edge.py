"""The one layer every request passes through before its route (`Edge`): its metrics, its span,
its body limit, and what becomes of an unexpected error. One layer, not a stack of four, so a
request takes one ASGI hop on its way in, and so the walk of a request is short to read.

- Every request is timed when its headers go out and counted by route template and status
  when it ends (`metrics.HTTP_DURATION`, `metrics.HTTP_REQUESTS`; never the raw path: ids would
  make a label per run). An SSE stream counts when its headers go out.
- With trace export off, each command (a non-GET request: create a run, cancel, answer) runs in
  a non-recording SERVER span, so the events it appends carry a trace id; GET requests, SSE
  streams among them, make no span. With export on, the FastAPI instrumentation
  (`_telemetry.instrument`) makes the request spans instead, around this layer.
- A request body over its route's limit answers 413 before anything parses it: at once from
  `Content-Length`, or as soon as a streamed body crosses the limit.
- An exception no route handled is logged once, with its traceback, and answers a 500
  problem (when nothing was sent yet); the connection stays usable for the next request.
- An answer to an authenticated request carries the tenant's `RateLimit-Policy` / `RateLimit`
  fields (set by `auth.principal` in the request's state), whatever route or error made it;
  an answer that names its own (a 429 for another quota) keeps those. SSE streams answered
  ahead of this layer add them themselves (`_sse.SSEResponse`).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import HTTPException
from opentelemetry.trace import SpanKind
from runloom.gateway.metrics import HTTP_DURATION, HTTP_REQUESTS
from runloom.gateway.problems import PROBLEM_JSON
from runloom.runtime.telemetry import tracer

log = logging.getLogger("runloom.gateway")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

KIB = 1024
MIB = 1024 * 1024

DEFAULT_BODY_LIMIT = 64 * KIB
"""Every route not listed in BODY_LIMITS."""
BODY_LIMITS: list[tuple[str, re.Pattern[str], int]] = [
    ("POST", re.compile(r"/v1/documents"), 50 * MIB),
    ("POST", re.compile(r"/v1/runs"), 256 * KIB),
    ("PUT", re.compile(r"/v1/budget"), 4 * KIB),
]
"""(method, path, bytes): the largest request body each route takes."""
RATE_LIMIT_STATE = "rate_limit_fields"
"""The request-state key holding the RateLimit fields its answer carries."""


def body_limit(method: str, path: str) -> int:
    for m, pattern, limit in BODY_LIMITS:
        if m == method and pattern.fullmatch(path):
            return limit
    return DEFAULT_BODY_LIMIT


class _TooLarge(HTTPException):
    """Raised from `receive` when a streamed body crosses the limit (FastAPI lets an
    HTTPException from body parsing through, so the client gets the 413 with this detail)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, _too_large_detail(limit))


def _too_large_detail(limit: int) -> str:
    shown = f"{limit // MIB} MB" if limit >= MIB else f"{limit // KIB} KB"
    return (
        f"This endpoint takes a request body of at most {shown}; send less (split uploads, "
        "shorten text, move large material into documents)."
    )


def _problem(status: int, title: str, detail: str, path: str) -> tuple[Message, Message]:
    body = json.dumps(
        {
            "type": "about:blank",
            "title": title,
            "status": status,
            "detail": detail,
            "instance": path,
        }
    ).encode()
    start = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", PROBLEM_JSON.encode()),
            (b"content-length", str(len(body)).encode()),
        ],
    }
    return start, {"type": "http.response.body", "body": body}


def _too_large(limit: int, path: str) -> tuple[Message, Message]:
    return _problem(413, "Request body too large", _too_large_detail(limit), path)


class Edge:
    """ASGI middleware: request metrics, command spans (export off), per-route body limits and
    one log line per unexpected error."""

    def __init__(self, app: ASGIApp, *, command_spans: bool = True) -> None:
        self.app = app
        self.command_spans = command_spans
        self._tracer = tracer("runloom.gateway")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        arrived = time.perf_counter()
        status = 500
        started = False

        async def tracked_send(message: Message) -> None:
            nonlocal started, status
            if message["type"] == "http.response.start":
                started, status = True, message["status"]
                responding(scope, arrived)
                message = _with_rate_limit(scope, message)
            await send(message)

        try:
            if self.command_spans and scope["method"] not in ("GET", "HEAD"):
                with self._tracer.start_as_current_span(
                    f"{scope['method']} {scope['path']}", kind=SpanKind.SERVER
                ):
                    await self._limited(scope, receive, tracked_send, lambda: started)
            else:
                await self._limited(scope, receive, tracked_send, lambda: started)
        finally:
            answered(scope, status)

    async def _limited(
        self, scope: Scope, receive: Receive, send: Send, started: Callable[[], bool]
    ) -> None:
        path: str = scope.get("path", "")
        limit = body_limit(scope["method"], path)
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            for message in _too_large(limit, path):
                await send(message)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _TooLarge(limit)
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _TooLarge:
            if not started():
                for message in _too_large(limit, path):
                    await send(message)
        except Exception:
            answer = unexpected_error(scope)
            if not started():
                for message in answer:
                    await send(message)


def rate_limit_headers(scope: Scope) -> list[tuple[bytes, bytes]]:
    """The RateLimit fields `auth.principal` left in the request's state (none if it did not
    authenticate the request), as ASGI headers."""
    fields: dict[str, str] | None = scope.get("state", {}).get(RATE_LIMIT_STATE)
    return [(name.lower().encode(), value.encode()) for name, value in (fields or {}).items()]


def _with_rate_limit(scope: Scope, start: Message) -> Message:
    extra = rate_limit_headers(scope)
    if not extra:
        return start
    headers = list(start.get("headers", ()))
    present = {name.lower() for name, _ in headers}
    return {**start, "headers": headers + [h for h in extra if h[0] not in present]}


def responding(scope: Scope, arrived: float) -> None:
    """The response's headers go out: time since the request arrived (`perf_counter`)."""
    HTTP_DURATION.labels(scope["method"], _route(scope)).observe(time.perf_counter() - arrived)


def answered(scope: Scope, status: int) -> None:
    """The request is done: count it by method, route template and status."""
    HTTP_REQUESTS.labels(scope["method"], _route(scope), str(status)).inc()


def _route(scope: Scope) -> str:
    route = scope.get("route")
    return str(getattr(route, "path", None) or "unmatched")


def unexpected_error(scope: Scope) -> tuple[Message, Message]:
    """Logs the exception being handled, with its traceback; the 500 problem to answer."""
    path: str = scope.get("path", "")
    log.exception("unexpected error on %s %s", scope["method"], path)
    return _problem(
        500,
        "Internal Server Error",
        "The gateway hit an unexpected error; nothing was lost. Retry the request; "
        "if it keeps failing, the gateway log has the details.",
        path,
    )


def has_body(scope: Scope) -> bool:
    """Whether the request announces a body (`Content-Length` or `Transfer-Encoding`)."""
    return any(name in (b"content-length", b"transfer-encoding") for name, _ in scope["headers"])


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
