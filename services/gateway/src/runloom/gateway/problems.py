"""HTTP errors as RFC 9457 `application/problem+json`, with a message a person can act on."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import asyncpg.exceptions
import msgspec
import nats.errors
import nats.js.errors
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from nats.aio.client import Client as NATS
from pydantic import BaseModel, ConfigDict
from runloom.contracts.operations import Operation
from runloom.contracts.types import ARTIFACT_ID, DOCUMENT_ID, RUN_ID, InvalidValue
from runloom.runtime.eventlog import StoreUnavailable, is_store_full
from runloom.runtime.request import RequestFailed, ask
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM_JSON = "application/problem+json"


class ProblemDetails(BaseModel):
    """An RFC 9457 problem: `detail` says what to change."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None


_TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    410: "Gone",
    413: "Request body too large",
    415: "Unsupported media type",
    422: "Invalid request",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` declaring each status as an `application/problem+json` body.

    Every route also declares 401, 413, 422, 500 and 503 (authentication, body limit,
    validation, the unexpected, and a server away: retry after Retry-After)."""
    out: dict[int | str, dict[str, Any]] = {}
    for code in sorted({*codes, 401, 413, 422, 500, 503}):
        out[code] = {
            "description": _TITLES.get(code, "Error"),
            "content": {PROBLEM_JSON: {"schema": ProblemDetails.model_json_schema()}},
        }
    return out


class Problem(Exception):
    def __init__(
        self, status: int, title: str, detail: str, *, type: str = "about:blank", **extra: Any
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.type = type
        self.extra = extra
        self.headers: dict[str, str] = {}

    def response(self, instance: str | None = None) -> JSONResponse:
        body = {
            "type": self.type,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if instance:
            body["instance"] = instance
        body.update(self.extra)
        return JSONResponse(
            body, status_code=self.status, media_type=PROBLEM_JSON, headers=self.headers or None
        )


BUS_UNAVAILABLE: tuple[type[Exception], ...] = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.NoServersError,
    nats.errors.StaleConnectionError,
    nats.js.errors.NoStreamResponseError,
    nats.js.errors.ServiceUnavailableError,
)
"""What NATS raises while the gateway's server is away, partitioned or between stream leaders:
the request may succeed moments later, so it answers 503 with Retry-After, not a 500."""
DATABASE_UNAVAILABLE: tuple[type[Exception], ...] = (
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    ConnectionRefusedError,
    ConnectionResetError,
    asyncpg.exceptions.InsufficientResourcesError,
)
"""What asyncpg raises while PostgreSQL restarts (shutdown, crash recovery, refused or dropped
connections) or lacks room (a full disk, out of memory or connections): also a 503 with
Retry-After."""
DATABASE_FULL = asyncpg.exceptions.DiskFullError
"""PostgreSQL could not extend a file: its disk is full (SQLSTATE 53100)."""
RETRY_AFTER_S = 1
"""Retry-After (seconds) on a 503 for a bus that is away: a cluster elects a new stream
leader, and a client moves to another server, within a few seconds."""


Q = TypeVar("Q", bound=msgspec.Struct)
R = TypeVar("R", bound=msgspec.Struct)


async def answer_of(
    nc: NATS, op: Operation[Q, R], request: Q, unavailable: Callable[[str], Problem]
) -> R:
    """The reply to one request/reply operation (the one requester); `unavailable(why)`, a 503
    with Retry-After, when no reply came that a retry may bring. A refusal is a bug on the
    gateway's side (it sent what the contract forbids): a 500 that names it."""
    try:
        return await ask(nc, op, request)
    except RequestFailed as failed:
        if failed.retryable:
            raise unavailable(failed.detail) from None
        raise RuntimeError(f"{failed.detail} (the gateway's request)") from None


def bus_unavailable(what: str = "The event store did not answer in time") -> Problem:
    problem = Problem(
        503,
        "Service Unavailable",
        f"{what} (a server is restarting or the cluster is electing a leader). Nothing was "
        f"lost; retry in {RETRY_AFTER_S} s, with the same Idempotency-Key or Last-Event-ID.",
    )
    problem.headers["Retry-After"] = str(RETRY_AFTER_S)
    return problem


STORE_FULL_RETRY_AFTER_S = 30
"""Retry-After (seconds) on a 503 for a full event store: space comes back when an operator
frees it or old events age out, not within a second."""


def store_full() -> Problem:
    problem = Problem(
        503,
        "Service Unavailable",
        "The event store is full: nothing was stored and no run was created. Running runs "
        "are paused until space is back, and nothing already acknowledged is lost. Retry in "
        f"{STORE_FULL_RETRY_AFTER_S} s (with the same Idempotency-Key); operators: see the "
        "README's 'When the disk fills'.",
    )
    problem.headers["Retry-After"] = str(STORE_FULL_RETRY_AFTER_S)
    return problem


def database_full() -> Problem:
    from runloom.gateway import metrics  # (metrics -> store -> ... would import this module)

    metrics.DATABASE_FULL.inc()
    problem = Problem(
        503,
        "Service Unavailable",
        "The database is full: it refused to store this request (what the event store "
        "acknowledged is kept and archived once there is room). Retry in "
        f"{STORE_FULL_RETRY_AFTER_S} s with the same Idempotency-Key, which completes the same "
        "run; operators: see the README's 'When the disk fills'.",
    )
    problem.headers["Retry-After"] = str(STORE_FULL_RETRY_AFTER_S)
    return problem


def not_found(what: str, ident: str) -> Problem:
    return Problem(404, "Not Found", f"No {what} {ident!r} exists for this API key's tenant.")


def _allowed(request: Request) -> str:
    """Every method some route serves at this path (Starlette names only the first route's)."""
    methods: set[str] = set()
    for route in _flat(request.app.router.routes):
        regex = getattr(route, "path_regex", None)
        if regex is not None and regex.match(request.url.path):
            methods |= set(getattr(route, "methods", None) or ())
    return ", ".join(sorted(methods))


def _flat(routes: list[Any]) -> list[Any]:
    """Routes, with those of included routers listed in place."""
    out: list[Any] = []
    for route in routes:
        inner = getattr(getattr(route, "original_router", None), "routes", None)
        out.extend(_flat(inner) if inner is not None else [route])
    return out


_EXAMPLES = {kind.pattern: kind.example for kind in (RUN_ID, DOCUMENT_ID, ARTIFACT_ID)}


def _message(error: Any) -> str:
    """A validation error in words, with an example of a valid id where a pattern failed."""
    message = str(error["msg"]).removeprefix("Value error, ")
    example = _EXAMPLES.get(str((error.get("ctx") or {}).get("pattern", "")))
    return f"{message}, e.g. {example!r}" if example else message


UNAVAILABLE: tuple[type[Exception], ...] = (
    *BUS_UNAVAILABLE,
    StoreUnavailable,
    *DATABASE_UNAVAILABLE,
)
"""Everything `unavailable` answers with a 503."""


def unavailable(exc: Exception) -> Problem:
    """The 503 for an exception of `UNAVAILABLE`: the event store or the database away or full.
    The exception handlers and the plain SSE stream (answered ahead of them) both use it."""
    if isinstance(exc, DATABASE_UNAVAILABLE):
        if isinstance(exc, DATABASE_FULL):
            return database_full()
        return bus_unavailable("The database did not answer")
    if is_store_full(exc):
        return store_full()
    return bus_unavailable()


def install(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return exc.response(request.url.path)

    for error in UNAVAILABLE:

        @app.exception_handler(error)
        async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
            return unavailable(exc).response(request.url.path)

    @app.exception_handler(InvalidValue)
    async def _invalid_value(request: Request, exc: InvalidValue) -> JSONResponse:
        return Problem(422, "Invalid request", str(exc)).response(request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {
                "field": ".".join(str(p) for p in e.get("loc", ()) if p != "body"),
                "message": _message(e),
            }
            for e in exc.errors()
        ]
        detail = "; ".join(f"{e['field'] or 'body'}: {e['message']}" for e in errors)
        return Problem(
            422,
            "Invalid request",
            f"The request body or parameters are invalid: {detail}",
            errors=errors,
        ).response(request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"There is no endpoint at {request.url.path}. See /docs for the API."
        headers = dict(exc.headers or {})
        status = exc.status_code
        if status == 400 and detail == "There was an error parsing the body":
            # FastAPI's answer to a body that is not JSON: a validation failure like any other
            # (422, declared on every route), said so that the client knows what to send.
            status = 422
            detail = "The request body is not valid JSON: send a UTF-8 JSON document."
        if status == 405:
            headers["Allow"] = _allowed(request) or headers.get("Allow", "")
            detail = (
                f"{request.method} is not allowed on {request.url.path}; "
                f"use {headers['Allow'] or 'another method'}."
            )
        problem = Problem(status, _TITLES.get(status, "Error"), detail)
        problem.headers.update(headers)
        return problem.response(request.url.path)

    # Unexpected errors are answered (and logged once) by `_edge.Edge`, outside this layer.
