"""Test helpers for runs: drive them as the gateway does (append run.created, publish
StartRun), read their events back (SSE or JSON pages), and stand in for an OpenAI-compatible
provider (`FakeOpenAI`, a local server speaking the real protocol)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from runloom.contracts import subjects
from runloom.contracts.commands import ResumeRun, StartRun
from runloom.contracts.events import (
    TERMINAL_TYPES,
    CancelRequested,
    ClarificationAnswered,
    Event,
    RunCreated,
)
from runloom.contracts.ids import new_id
from runloom.runtime import bus
from runloom.runtime.eventlog import EventLog


class Driver:
    def __init__(self, js: Any, pool: Any, tenant_id: str) -> None:
        self.js = js
        self.pool = pool
        self.tenant_id = tenant_id
        self.log = EventLog(js, "gateway/test")

    async def create(self, question: str, budget_usd: float | None = None, **options: Any) -> str:
        run_id = new_id("run")
        await self.log.append(
            run_id,
            self.tenant_id,
            RunCreated(question=question, options=options, budget_usd=budget_usd),
        )
        return run_id

    async def start(self, run_id: str, msg_id: str | None = None) -> None:
        await bus.publish(
            self.js,
            subjects.START_RUN,
            StartRun(command_id=new_id("cmd"), run_id=run_id, tenant_id=self.tenant_id),
            msg_id=msg_id or f"start-{run_id}",
        )

    async def run(self, question: str, budget_usd: float | None = None, **options: Any) -> str:
        run_id = await self.create(question, budget_usd, **options)
        await self.start(run_id)
        return run_id

    async def cancel(self, run_id: str) -> Event:
        return await self.log.append(run_id, self.tenant_id, CancelRequested(reason="test"))

    async def answer(self, run_id: str, answer: str) -> None:
        ev = await self.log.append(run_id, self.tenant_id, ClarificationAnswered(answer=answer))
        await bus.publish(
            self.js,
            subjects.RESUME_RUN,
            ResumeRun(
                command_id=new_id("cmd"),
                run_id=run_id,
                tenant_id=self.tenant_id,
                reason="clarification_answered",
                causation_id=ev.id,
            ),
            msg_id=f"resume-{ev.id}",
        )

    async def events(self, run_id: str) -> list[Event]:
        return await self.log.events(run_id)

    async def wait_for(self, run_id: str, types: set[str], timeout: float = 30.0) -> list[Event]:
        """Poll the log until an event of one of `types` is stored; returns all events."""
        deadline = time.monotonic() + timeout
        while True:
            events = await self.events(run_id)
            if any(e.type in types for e in events):
                return events
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no {sorted(types)} within {timeout} s; got {[e.type for e in events]}"
                )
            await asyncio.sleep(0.05)

    async def finished(self, run_id: str, timeout: float = 30.0) -> list[Event]:
        return await self.wait_for(run_id, set(TERMINAL_TYPES), timeout)


# -- a local server speaking the OpenAI chat completions wire protocol ---------------------------


class FakeOpenAI:
    """OpenAI-compatible `POST /v1/chat/completions` with SSE streaming, on a local port.

    `script` lists how the next requests are answered: "ok" (streamed chunks, a usage chunk,
    `data: [DONE]`), "429" (Retry-After: `retry_after`), "500", "cut" (some chunks, then the
    connection drops with no [DONE]). When the script runs out, requests are answered "ok".
    The reply quotes the first prose sentence of the first passage in the prompt, citing it.
    """

    def __init__(
        self, script: list[str] | None = None, retry_after: float = 1.0, port: int = 0
    ) -> None:
        self.script = list(script or [])
        self.retry_after = retry_after
        self.requests: list[dict[str, Any]] = []
        self.port = port
        self._server: Any = None
        self._task: asyncio.Task[None] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def reply_for(self, body: dict[str, Any]) -> str:
        import re

        from runloom.corpus import text as textlib

        user = next((m["content"] for m in body["messages"] if m["role"] == "user"), "")
        passages = re.split(r"\n\n\[(\d+)\] ", user)
        for i in range(1, len(passages) - 1, 2):
            number, text = passages[i], passages[i + 1].split("\n", 1)[-1]
            for sentence in textlib.sentences(text):
                if textlib.is_prose_sentence(sentence):
                    return f'- {sentence} [{number}: "{sentence}"]\n'
        return ""

    def _app(self) -> Any:
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse, StreamingResponse
        from starlette.routing import Route

        async def completions(request: Request) -> Any:
            body = await request.json()
            self.requests.append(body)
            mode = self.script.pop(0) if self.script else "ok"
            if mode == "500":
                return JSONResponse({"error": {"message": "upstream overloaded"}}, status_code=500)
            if mode == "429":
                return JSONResponse(
                    {"error": {"message": "Rate limit reached", "type": "rate_limit_error"}},
                    status_code=429,
                    headers={"Retry-After": str(self.retry_after)},
                )
            reply = self.reply_for(body)
            pieces = [reply[i : i + 7] for i in range(0, len(reply), 7)]

            async def stream() -> Any:
                for n, piece in enumerate(pieces):
                    if mode == "cut" and n == len(pieces) // 2:
                        raise ConnectionResetError("stream cut by the test server")
                    chunk = {
                        "id": "chatcmpl-test",
                        "object": "chat.completion.chunk",
                        "model": body.get("model"),
                        "choices": [{"index": 0, "delta": {"content": piece}}],
                    }
                    yield f"data: {json.dumps(chunk)}\n\n"
                    await asyncio.sleep(0.005)
                usage = {"prompt_tokens": 321, "completion_tokens": len(pieces), "total_tokens": 0}
                usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
                final = {"id": "chatcmpl-test", "object": "chat.completion.chunk", "choices": []}
                yield f"data: {json.dumps({**final, 'usage': usage})}\n\n"
                yield "data: [DONE]\n\n"

            return StreamingResponse(stream(), media_type="text/event-stream")

        return Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"])])

    async def __aenter__(self) -> FakeOpenAI:
        import socket

        import uvicorn

        if not self.port:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                self.port = s.getsockname()[1]
        config = uvicorn.Config(self._app(), host="127.0.0.1", port=self.port, log_level="error")
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve())
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the fake OpenAI server did not start")
            await asyncio.sleep(0.02)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.should_exit = True
        if self._task is not None:
            await asyncio.wait_for(self._task, 10)


# -- the HTTP API, as a client uses it -----------------------------------------------------------


TERMINAL = frozenset(TERMINAL_TYPES)


async def sse_events(
    client: Any, url: str, run_id: str, headers: dict[str, str], timeout: float = 60.0
) -> tuple[list[dict[str, Any]], list[float]]:
    """Read a run's SSE stream until its terminal event: (events, arrival times)."""
    events: list[dict[str, Any]] = []
    arrivals: list[float] = []
    data: list[str] = []
    async with asyncio.timeout(timeout):
        async with client.stream(
            "GET", f"{url}/v1/runs/{run_id}/events", headers=headers, timeout=timeout
        ) as resp:
            assert resp.status_code == 200, await resp.aread()
            async for line in resp.aiter_lines():
                if line.startswith("data:"):
                    data.append(line[5:].lstrip())
                elif line == "" and data:
                    payload = json.loads("\n".join(data))
                    data = []
                    if "type" not in payload or "seq" not in payload:
                        continue  # not a run event (e.g. a reset snapshot)
                    events.append(payload)
                    arrivals.append(time.monotonic())
                    if payload["type"] in TERMINAL:
                        return events, arrivals
    raise AssertionError("the stream ended before the run's terminal event")


async def json_events(client: Any, url: str, run_id: str, headers: dict[str, str]) -> list[dict]:
    """Every stored event of a run, paged through `?format=json`."""
    out: list[dict[str, Any]] = []
    after: str | None = None
    while True:
        params = {"format": "json", **({"after": after} if after else {})}
        resp = await client.get(f"{url}/v1/runs/{run_id}/events", params=params, headers=headers)
        assert resp.status_code == 200, resp.text
        page = resp.json()
        out += [item["event"] for item in page["events"]]
        if page["done"] or not page["events"]:
            return out
        after = page["next_cursor"]


async def wait_for_event(
    client: Any,
    url: str,
    run_id: str,
    headers: dict[str, str],
    types: set[str],
    timeout: float = 30.0,
) -> list[dict[str, Any]]:
    """Poll the JSON history until an event of one of `types` is stored."""
    deadline = time.monotonic() + timeout
    while True:
        events = await json_events(client, url, run_id, headers)
        if any(e["type"] in types for e in events):
            return events
        if time.monotonic() > deadline:
            seen = [e["type"] for e in events]
            raise AssertionError(f"no {sorted(types)} in {timeout} s: {seen}")
        await asyncio.sleep(0.05)
