"""A small TCP fault proxy (asyncio): latency, connection resets and half-open connections.

The kernel here has no `netem`, so faults between clients and servers come from this proxy:
`delay_s` holds every chunk that long in each direction, `reset()` aborts every open connection
with an RST, and `half_open = True` keeps connections open while forwarding nothing (a peer
that vanished without closing). Faults apply to new and existing connections alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct


class FaultProxy:
    """Listens on `127.0.0.1:<port>` and forwards to `target`."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.delay_s = 0.0
        self.half_open = False
        self.resets = 0
        self._server: asyncio.Server | None = None
        self._conns: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    async def start(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(*self.target), timeout=2.0
            )
        except (OSError, TimeoutError):
            _abort(writer)
            return
        pair = (writer, up_writer)
        self._conns.add(pair)
        pumps = [
            asyncio.ensure_future(self._pump(reader, up_writer)),
            asyncio.ensure_future(self._pump(up_reader, writer)),
        ]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            pass  # the proxy is closing
        finally:
            for p in pumps:
                p.cancel()
            self._conns.discard(pair)
            for w in pair:
                _abort(w)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                return
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            while self.half_open:  # noqa: ASYNC110 (a fault toggled by the test, polled)
                await asyncio.sleep(0.05)  # forward nothing, keep the socket
            writer.write(chunk)
            await writer.drain()

    def reset(self) -> int:
        """Abort every open connection with an RST; returns how many."""
        n = len(self._conns)
        for pair in list(self._conns):
            for w in pair:
                _abort(w)
        self.resets += n
        return n

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self.reset()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0), not a polite FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(Exception):
        writer.transport.abort()
