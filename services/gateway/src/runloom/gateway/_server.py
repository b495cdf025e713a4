"""The gateway's HTTP server: uvicorn on httptools, with the limits a public edge needs.

uvicorn's httptools protocol has no bound on a request head and no deadline for reading it or
the body: an 8 MB header reached the application, a client sending nothing kept its connection
forever, and so did one that announced a body and sent it a byte at a time. `GatewayHttpProtocol`
adds a bound on the head (431) and deadlines for the head and the body (408; the connection is
then closed); idle keep-alive connections are closed by uvicorn's `timeout_keep_alive`.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any, cast

from runloom.runtime.config import env_float
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


@dataclass(frozen=True, kw_only=True)
class ServerLimits:
    """Limits of the HTTP edge (RUNLOOM_HTTP_* environment variables)."""

    max_head_bytes: int = 16 * 1024
    """Request line plus headers, in bytes (RUNLOOM_HTTP_MAX_HEAD_BYTES); more answers 431."""
    head_timeout_s: float = 10.0
    """Time to receive a request's head once it starts or the connection opens (408 after)."""
    keep_alive_s: float = 30.0
    """An idle keep-alive connection is closed after this (RUNLOOM_HTTP_KEEP_ALIVE_S)."""
    body_idle_s: float = 10.0
    """Longest silence while a request body is due (RUNLOOM_HTTP_BODY_IDLE_S); 408 after."""
    body_timeout_s: float = 120.0
    """Time to receive a whole request body after its head (RUNLOOM_HTTP_BODY_TIMEOUT_S)."""

    @classmethod
    def from_env(cls) -> ServerLimits:
        return cls(
            max_head_bytes=int(env_float("RUNLOOM_HTTP_MAX_HEAD_BYTES", 16 * 1024)),
            head_timeout_s=env_float("RUNLOOM_HTTP_HEAD_TIMEOUT_S", 10.0),
            keep_alive_s=env_float("RUNLOOM_HTTP_KEEP_ALIVE_S", 30.0),
            body_idle_s=env_float("RUNLOOM_HTTP_BODY_IDLE_S", 10.0),
            body_timeout_s=env_float("RUNLOOM_HTTP_BODY_TIMEOUT_S", 120.0),
        )


def _problem(status: int, reason: str, title: str, detail: str) -> bytes:
    body = json.dumps({"type": "about:blank", "title": title, "status": status, "detail": detail})
    return (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/problem+json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n{body}"
    ).encode()


class GatewayHttpProtocol(HttpToolsProtocol):
    """httptools with a bounded request head and deadlines to receive it and the body."""

    limits = ServerLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes = 0
        self._head_too_large = False
        self._in_head = True
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._body_due = 0.0
        self._body_seen = 0.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._body_done()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._in_head and self._head_timer is None:
            self._arm()
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0
        self._in_head = True
        if self._head_timer is None:
            self._arm()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._disarm()
        super().on_headers_complete()
        if self.cycle is not None and self.scope["method"] != "HEAD":
            extensions = cast(dict[str, Any], self.scope.setdefault("extensions", {}))
            extensions[PUSH] = BodyPush(self, self.cycle)
        if _has_body(self.headers):
            now = self.loop.time()
            self._body_seen = now
            self._body_due = now + self.limits.body_timeout_s
            self._body_check()

    def on_body(self, body: bytes) -> None:
        self._body_seen = self.loop.time()
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._body_done()
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        if self._head_too_large:
            self._reject(
                431,
                "Request Header Fields Too Large",
                f"The request line and headers exceed {self.limits.max_head_bytes:,} bytes; "
                "send fewer or shorter headers.",
            )
            return
        super().send_400_response(msg)

    def _count(self, n: int) -> None:
        self._head_bytes += n
        if self._head_bytes > self.limits.max_head_bytes:
            self._head_too_large = True
            raise ValueError("request head too large")  # httptools turns it into a parser error

    def _arm(self) -> None:
        self._disarm()
        self._head_timer = self.loop.call_later(self.limits.head_timeout_s, self._head_timeout)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timeout(self) -> None:
        self._head_timer = None
        if self._in_head:
            self._reject(
                408,
                "Request Timeout",
                f"The request head was not received within {self.limits.head_timeout_s:g} s.",
            )

    def _body_check(self) -> None:
        self._body_timer = None
        now = self.loop.time()
        idle_until = self._body_seen + self.limits.body_idle_s
        if self.flow.read_paused:  # the application is behind, not the client
            self._body_seen, idle_until = now, now + self.limits.body_idle_s
        if now >= self._body_due or now >= idle_until:
            why = (
                f"nothing arrived for {self.limits.body_idle_s:g} s"
                if now < self._body_due
                else f"it did not all arrive within {self.limits.body_timeout_s:g} s"
            )
            detail = (
                f"The request body was not received: {why}. Send the body right after the head."
            )
            if self.cycle is not None and self.cycle.response_started:
                self.transport.close()  # answered already: only the connection goes
            else:
                self._reject(408, "Request Timeout", detail)
            return
        self._body_timer = self.loop.call_at(min(self._body_due, idle_until), self._body_check)

    def _body_done(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _reject(self, status: int, reason: str, detail: str) -> None:
        if not self.transport.is_closing():
            self.transport.write(_problem(status, reason, reason, detail))
            self.transport.close()


PUSH = "runloom.push"
"""The scope extension under which the server offers the application a `BodyPush`."""


class BodyPush:
    """Writes a streamed response's next body part straight to the connection, from outside
    the request's task: for a fan-out that would otherwise wake one task per client and event
    to hand over a few hundred bytes through `send`.

    `__call__` writes only where `send` would have written at once (the response started and
    not finished, this request's the one on the connection, nothing held back by flow
    control) and says whether it did; otherwise the caller falls back to `send`.
    """

    __slots__ = ("cycle", "protocol")

    def __init__(self, protocol: GatewayHttpProtocol, cycle: Any) -> None:
        self.protocol = protocol
        self.cycle = cycle

    @property
    def chunked(self) -> bool:
        """The response's body goes as HTTP/1.1 chunks: `__call__` takes them framed so."""
        return bool(self.cycle.chunked_encoding)

    def __call__(self, data: bytes) -> bool:
        """Write `data`, framed as the response's body is (`chunked`): the caller frames a
        part once and shares it with every connection it goes to."""
        cycle, protocol = self.cycle, self.protocol
        if (
            protocol.cycle is not cycle
            or not cycle.response_started
            or cycle.response_complete
            or cycle.disconnected
            or protocol.flow.write_paused
            or protocol.transport.is_closing()
        ):
            return False
        protocol.transport.write(data)
        return True


def _has_body(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name == b"content-length":
            return value.strip() not in (b"", b"0")
        if name == b"transfer-encoding":
            return True
    return False


def protocol_class(limits: ServerLimits) -> type[GatewayHttpProtocol]:
    """The protocol class uvicorn instantiates per connection, bound to `limits`."""
    return type("GatewayHttpProtocol", (GatewayHttpProtocol,), {"limits": limits})
