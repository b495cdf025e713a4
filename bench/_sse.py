"""A lean SSE client on a bare asyncio protocol (the benchmark must not be its own bottleneck).

Each connection is parsed in `data_received`, straight from the event loop's read callback:
no task, no stream reader, no wake-up per chunk. That is the same path a nats-py callback
takes in the raw baselines (one read, parsed, handed on), so both sides pay alike.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable

TS = re.compile(rb'"message":"ts(\d+)"')
TERMINAL = b"event: run.completed"
EVENT = b"\nevent: "


class _Protocol(asyncio.Protocol):
    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.tail = b""

    def data_received(self, chunk: bytes) -> None:
        self.stream.received(chunk, self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.stream.done.set()


class Stream:
    """One SSE connection: counts events; optionally records publish -> receive latencies,
    or hands each stamp and its receipt time (ns) to `on_stamp`."""

    def __init__(
        self,
        latencies: list[float] | None = None,
        on_stamp: Callable[[int, int], None] | None = None,
    ) -> None:
        self.count = 0
        self.done = asyncio.Event()
        self.first = asyncio.Event()
        self.latencies = latencies
        self.on_stamp = on_stamp
        self.transport: asyncio.Transport | None = None

    async def open(self, port: int, path: str, key: str, last_id: str | None = None) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_connection(lambda: _Protocol(self), "127.0.0.1", port)
        self.transport = transport
        extra = f"Last-Event-ID: {last_id}\r\n" if last_id else ""
        transport.write(
            f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n{extra}\r\n".encode()
        )

    def received(self, chunk: bytes, proto: _Protocol) -> None:
        if self.done.is_set():
            return
        now = time.time_ns()
        tail = proto.tail
        buf = tail + chunk
        # Occurrences wholly inside `tail` were counted with the previous chunk.
        n = buf.count(EVENT) - tail.count(EVENT)
        self.count += n
        if n:
            self.first.set()
        if self.latencies is not None:
            for m in TS.finditer(chunk):
                self.latencies.append((now - int(m.group(1))) / 1e6)
        if self.on_stamp is not None:
            for m in TS.finditer(chunk):
                self.on_stamp(int(m.group(1)), now)
        if TERMINAL in buf:
            self.done.set()
            if self.transport is not None:
                self.transport.close()
            return
        proto.tail = buf[-32:]

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
