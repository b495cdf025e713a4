"""A webhook receiver for tests: a real HTTP server (uvicorn) on loopback that records every
request and answers as the test says (fail the first N, then 2xx).

    async with WebhookReceiver(fail_first=3) as receiver:
        ... register receiver.url ...
        await receiver.wait_for(lambda r: len(r.ids()) == 5, timeout=30)
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from runloom.devkit.embedded import free_port


@dataclass(frozen=True)
class Received:
    """One request as it arrived, and what the receiver answered."""

    headers: dict[str, str]
    """Lower-cased names."""
    body: bytes
    status: int
    at: float


@dataclass
class WebhookReceiver:
    fail_first: int = 0
    """Answer this many requests (whatever they are) with `fail_status` first."""
    fail_status: int = 503
    path: str = "/hook"
    requests: list[Received] = field(default_factory=list)
    answer: Callable[[int], int] | None = None
    """Optional: the status for the n-th request (0-based), instead of fail_first."""
    _server: Any = None
    _task: asyncio.Task[None] | None = None
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    async def _app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        n = len(self.requests)
        if self.answer is not None:
            status = self.answer(n)
        else:
            status = self.fail_status if n < self.fail_first else 204
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        self.requests.append(Received(headers, body, status, time.monotonic()))
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def start(self) -> WebhookReceiver:
        import uvicorn

        self.port = free_port()
        config = uvicorn.Config(
            self._app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="off",
            interface="asgi3",
        )
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve())
        deadline = time.monotonic() + 10
        while not self._server.started:
            assert time.monotonic() < deadline, "the webhook receiver did not start"
            await asyncio.sleep(0.01)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, timeout=10)

    async def __aenter__(self) -> WebhookReceiver:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def delivered(self) -> list[Received]:
        """Requests answered 2xx, in arrival order."""
        return [r for r in self.requests if 200 <= r.status < 300]

    def ids(self) -> set[str]:
        """Distinct `webhook-id`s answered 2xx."""
        return {r.headers["webhook-id"] for r in self.delivered()}

    async def wait_for(self, done: Callable[[WebhookReceiver], bool], timeout: float) -> None:
        """Poll `done(self)` until true, failing after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while not done(self):
            assert time.monotonic() < deadline, (
                f"webhooks not received within {timeout}s: {len(self.requests)} requests, "
                f"{len(self.ids())} distinct ids delivered"
            )
            await asyncio.sleep(0.05)


def verified(receiver: WebhookReceiver, secrets: list[str]) -> list[dict[str, Any]]:
    """Every 2xx request's body, in arrival order, each verified by the reference library
    (`standardwebhooks`) with one of `secrets`; AssertionError naming one that fails."""
    from standardwebhooks import Webhook
    from standardwebhooks.webhooks import WebhookVerificationError

    out = []
    for r in receiver.delivered():
        for secret in secrets:
            try:
                out.append(Webhook(secret).verify(r.body, r.headers))
                break
            except WebhookVerificationError:
                continue
        else:
            raise AssertionError(f"webhook {r.headers.get('webhook-id')} does not verify")
    return out


def in_order_once(receiver: WebhookReceiver, bodies: list[dict[str, Any]]) -> dict[str, list[int]]:
    """Per run, the `seq`s delivered after dropping repeated `webhook-id`s; asserts that the
    body's `event_id` is its `webhook-id`, and that no run's events arrived out of order (a
    repeat is only ever of the event just before)."""
    seen: set[str] = set()
    runs: dict[str, list[int]] = {}
    for r, body in zip(receiver.delivered(), bodies, strict=True):
        assert r.headers["webhook-id"] == body["event_id"], body
        if body["event_id"] in seen:
            assert runs[body["run_id"]][-1] == body["seq"], f"late repeat: {body}"
            continue
        seen.add(body["event_id"])
        got = runs.setdefault(body["run_id"], [])
        assert not got or got[-1] < body["seq"], f"out of order: {got} then {body['seq']}"
        got.append(body["seq"])
    return runs
