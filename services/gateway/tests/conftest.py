"""Shared helpers: an SSE reader and an event writer driving runs as concurrent writers do."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgspec
import pytest

TERMINAL = {"run.completed", "run.failed", "run.cancelled", "run.budget_stopped"}


@dataclass
class SSE:
    """One parsed server-sent event."""

    event: str
    id: str | None
    data: str

    @property
    def json(self) -> Any:
        return msgspec.json.decode(self.data)

    @property
    def seq(self) -> int:
        return int(self.json["seq"])


@dataclass
class Reader:
    """Reads an SSE stream into `events`; `last_id` is what a browser would resume with."""

    events: list[SSE] = field(default_factory=list)
    comments: int = 0
    last_id: str | None = None
    status: int | None = None
    ended: bool = False
    """The server closed the stream."""
    reconnects: int = 0

    async def read(
        self,
        client: httpx.AsyncClient,
        url: str,
        headers: dict[str, str] | None = None,
        *,
        stop: Callable[[SSE], bool] | None = None,
        params: dict[str, str] | None = None,
        resume: bool = True,
        timeout: float = 30.0,
    ) -> None:
        """Read until the server closes the stream (or `stop(event)` says so)."""
        async with asyncio.timeout(timeout):
            await self._read(client, url, headers, stop=stop, params=params, resume=resume)

    async def _read(
        self,
        client: httpx.AsyncClient,
        url: str,
        headers: dict[str, str] | None,
        *,
        stop: Callable[[SSE], bool] | None,
        params: dict[str, str] | None,
        resume: bool,
    ) -> None:
        hdrs = dict(headers or {})
        if resume and self.last_id:
            hdrs["Last-Event-ID"] = self.last_id
        async with client.stream("GET", url, headers=hdrs, params=params) as resp:
            self.status = resp.status_code
            if resp.status_code != 200:
                await resp.aread()
                return
            fields: dict[str, str] = {}
            async for line in resp.aiter_lines():
                if line == "":
                    if "data" in fields:
                        ev = SSE(fields.get("event", "message"), fields.get("id"), fields["data"])
                        self.events.append(ev)
                        if ev.id:
                            self.last_id = ev.id
                        if stop is not None and stop(ev):
                            return
                    fields = {}
                    continue
                if line.startswith(":"):
                    self.comments += 1
                    continue
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                fields[name] = fields[name] + "\n" + value if name in fields else value
        self.ended = True

    async def follow(
        self,
        client: httpx.AsyncClient,
        url: str,
        headers: dict[str, str] | None = None,
        *,
        params: dict[str, str] | None = None,
        timeout: float = 60.0,
    ) -> None:
        """Read to the terminal event, reconnecting with the last cursor after any failure."""
        self.reconnects = 0
        async with asyncio.timeout(timeout):
            while not (
                self.events
                and self.events[-1].event.startswith("run.")
                and (self.events[-1].event in TERMINAL)
            ):
                try:
                    await self._read(client, url, headers, stop=None, params=params, resume=True)
                except (httpx.TransportError, httpx.HTTPStatusError):
                    pass
                if self.events and self.events[-1].event in TERMINAL:
                    return
                self.reconnects += 1
                await asyncio.sleep(0.1)  # a browser's EventSource waits `retry` ms too

    def seqs(self) -> list[int]:
        return [e.seq for e in self.events if e.event != "reset"]


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> None:
    """Poll `check` until it holds, or fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        if await check():
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


@pytest.fixture
def reader() -> type[Reader]:
    return Reader


@pytest.fixture
def poll() -> Callable[..., Awaitable[None]]:
    return eventually
