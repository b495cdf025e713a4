"""A lean SSE client on raw asyncio streams (the benchmark must not be its own bottleneck)."""

from __future__ import annotations

import asyncio
import re
import time

TS = re.compile(rb'"message":"ts(\d+)"')
TERMINAL = b"event: run.completed"


class Stream:
    """One SSE connection: counts events; optionally records publish -> receive latencies."""

    def __init__(self, latencies: list[float] | None = None) -> None:
        self.count = 0
        self.done = asyncio.Event()
        self.first = asyncio.Event()
        self.latencies = latencies
        self.writer: asyncio.StreamWriter | None = None
        self.task: asyncio.Task[None] | None = None

    async def open(self, port: int, path: str, key: str, last_id: str | None = None) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
        self.writer = writer
        extra = f"Last-Event-ID: {last_id}\r\n" if last_id else ""
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n{extra}\r\n".encode()
        )
        self.task = asyncio.create_task(self._read(reader))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        tail = b""
        while True:
            chunk = await reader.read(1 << 16)
            if not chunk:
                break
            now = time.time_ns()
            buf = tail + chunk
            # Occurrences wholly inside `tail` were counted with the previous chunk.
            n = buf.count(b"\nevent: ") - tail.count(b"\nevent: ")
            self.count += n
            if n:
                self.first.set()
            if self.latencies is not None:
                for m in TS.finditer(chunk):
                    self.latencies.append((now - int(m.group(1))) / 1e6)
            if TERMINAL in buf:
                break
            tail = buf[-32:]
        self.done.set()

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        if self.writer is not None:
            self.writer.close()
