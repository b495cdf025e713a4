"""The HTTP edge of a real gateway process: bounded request heads, a deadline to send one,
deadlines for the body, keep-alive kept after an error answer."""

from __future__ import annotations

import asyncio
import json

import pytest

pytestmark = [
    pytest.mark.platform_services("gateway"),
    pytest.mark.platform_env(
        RUNLOOM_HTTP_HEAD_TIMEOUT_S="1",
        RUNLOOM_HTTP_MAX_HEAD_BYTES="8192",
        RUNLOOM_HTTP_BODY_IDLE_S="1",
        RUNLOOM_HTTP_BODY_TIMEOUT_S="3",
    ),
]


async def _exchange(port: int, request: bytes, timeout: float = 10.0) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(65536), timeout)
    finally:
        writer.close()


async def test_an_oversized_head_answers_431_before_the_application(platform) -> None:
    big = b"X-Big: " + b"a" * 20_000 + b"\r\n"
    answer = await _exchange(platform.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + big + b"\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431"), answer[:200]
    assert b"application/problem+json" in head
    assert "8,192 bytes" in json.loads(body)["detail"]


async def test_a_client_that_sends_no_head_is_answered_408_and_closed(platform) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", platform.port)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never finishes its head
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(65536), 10)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed
    finally:
        writer.close()
    idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", platform.port)
    try:  # a connection that never says anything is closed too
        answer = await asyncio.wait_for(idle_reader.read(65536), 10)
        assert answer.startswith(b"HTTP/1.1 408") or answer == b""
    finally:
        idle_writer.close()


def _post_head(path: str, key: str, length: int) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


@pytest.mark.parametrize("path", ["/v1/runs", "/v1/documents"])
async def test_a_body_that_stops_arriving_is_answered_408_and_closed(platform, path) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", platform.port)
    try:
        writer.write(_post_head(path, platform.api_key, 100) + b'{"question": "')
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(65536), 10)
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408"), answer[:300]
        assert b"application/problem+json" in head
        assert "nothing arrived for 1 s" in json.loads(body)["detail"]
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed
    finally:
        writer.close()
    await _still_serves(platform)


async def test_a_body_sent_a_byte_at_a_time_is_cut_off_at_the_body_deadline(platform) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", platform.port)
    body = json.dumps({"question": "x" * 200}).encode()
    loop = asyncio.get_running_loop()
    started = loop.time()
    answer = b""
    try:
        writer.write(_post_head("/v1/runs", platform.api_key, len(body)))
        for i in range(len(body)):  # a byte every 0.5 s: never silent for the 1 s idle limit
            writer.write(body[i : i + 1])
            await writer.drain()
            try:
                answer = await asyncio.wait_for(reader.read(65536), 0.5)
                break
            except TimeoutError:
                continue
        took = loop.time() - started
    finally:
        writer.close()
    head, _, problem = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), answer[:300]
    assert "did not all arrive within 3 s" in json.loads(problem)["detail"]
    assert 2.5 < took < 6, took
    await _still_serves(platform)


async def _still_serves(platform) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", platform.port)
    try:
        writer.write(
            b"GET /v1/runs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            + platform.api_key.encode()
            + b"\r\nConnection: close\r\n\r\n"
        )
        answer = await asyncio.wait_for(reader.read(), 10)  # to the close
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    assert b'"items":[]' in answer.replace(b" ", b""), "nothing was stored from the cut bodies"


async def test_an_error_answer_keeps_the_connection_alive(platform) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", platform.port)
    try:
        for path in (b"/v1/runs/run_%2A", b"/healthz"):
            writer.write(
                b"GET "
                + path
                + b" HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                + platform.api_key.encode()
                + b"\r\n\r\n"
            )
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            assert b"connection: close" not in head.lower(), head
        assert head.startswith(b"HTTP/1.1 200")
    finally:
        writer.close()
