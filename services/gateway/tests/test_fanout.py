"""Fan-out: a stalled client is cut off while 50 others keep receiving, unslowed."""

from __future__ import annotations

import asyncio
import socket
import time
from urllib.parse import urlsplit

import httpx
import pytest
from runloom.contracts.events import RunCompleted, StepProgress
from runloom.runtime.eventlog import EventLog

pytestmark = [
    pytest.mark.platform_services("gateway"),
    pytest.mark.platform_env(RUNLOOM_SSE_QUEUE="32"),
]

EVENTS = 220
PAD = "x" * 32_000  # past every kernel buffer (tcp_wmem allows 4 MB)


async def stalled_connection(url: str, path: str, key: str) -> socket.socket:
    """A client that asks for the stream, then never reads (tiny receive window)."""
    parts = urlsplit(url)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, (parts.hostname, parts.port))
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nAuthorization: Bearer {key}\r\n"
        "Accept: text/event-stream\r\n\r\n"
    )
    await loop.sock_sendall(sock, request.encode())
    return sock


async def test_a_stalled_client_is_cut_off_and_never_slows_the_others(platform, js, reader, poll):
    limits = httpx.Limits(max_connections=100)
    async with httpx.AsyncClient(
        base_url=platform.url, headers=platform.headers(), limits=limits, timeout=30
    ) as c:
        run_id = (await c.post("/v1/runs", json={"question": "fan out"})).json()["id"]
        log = EventLog(js, "w")
        tenant = (await log.events(run_id))[0].tenant_id
        path = f"/v1/runs/{run_id}/events"
        stalled = await stalled_connection(platform.url, path, platform.api_key)
        readers = [reader() for _ in range(50)]
        tasks = [asyncio.create_task(r.read(c, path, timeout=60)) for r in readers]
        await poll(lambda: _all(readers, 1))  # everyone is connected and got run.created

        started = time.monotonic()
        for i in range(EVENTS):
            await log.append(run_id, tenant, StepProgress(step_id="s", message=f"{i} {PAD}"))
        await log.append(run_id, tenant, RunCompleted())
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
        elapsed = time.monotonic() - started
        for r in readers:
            assert r.ended and r.seqs() == list(range(1, EVENTS + 3))
        assert elapsed < 45

        # The stalled client now reads what the server had managed to send: no terminal
        # event, and the connection is closed (it was cut off, not left hanging).
        loop = asyncio.get_running_loop()
        received = b""
        async with asyncio.timeout(20):
            while chunk := await loop.sock_recv(stalled, 65536):
                received += chunk
        stalled.close()
        assert b"event: run.completed" not in received
        assert received.count(b"event: ") < EVENTS


async def _all(readers, n: int) -> bool:
    return all(len(r.events) >= n for r in readers)
