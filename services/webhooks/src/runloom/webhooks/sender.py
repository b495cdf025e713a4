"""One HTTP attempt: POST the body, signed, through the guarded connection; never a redirect.

`Sender.post` returns an `Attempt` whatever happens (a timeout, a refused connection, a
forbidden address, a non-2xx answer): the dispatcher decides what follows. At most
`max_response_bytes` of the answer are read, and the whole attempt is bounded by `timeout_s`.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass

import httpcore
from runloom.webhooks.egress import EgressPolicy, GuardedBackend, Refused

USER_AGENT = "Runloom-Webhooks/1"


@dataclass(frozen=True)
class Attempt:
    """How one attempt went."""

    status: int | None
    """The HTTP status (None: no answer)."""
    error: str | None
    """What went wrong (None: a 2xx answer)."""

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class Sender:
    """POSTs webhooks through one connection pool guarded by the egress policy."""

    def __init__(
        self,
        policy: EgressPolicy,
        *,
        timeout_s: float = 15.0,
        connect_timeout_s: float = 5.0,
        max_response_bytes: int = 4096,
        max_connections: int = 64,
        network: httpcore.AsyncNetworkBackend | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.policy = policy
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.max_response_bytes = max_response_bytes
        self.pool = httpcore.AsyncConnectionPool(
            network_backend=GuardedBackend(policy, network),
            max_connections=max_connections,
            retries=0,
            ssl_context=ssl_context,
        )

    async def close(self) -> None:
        await self.pool.aclose()

    async def post(self, url: str, headers: dict[str, str], body: bytes) -> Attempt:
        try:
            self.policy.check_url(url)
            async with asyncio.timeout(self.timeout_s):
                return await self._post(url, headers, body)
        except Refused as exc:
            return Attempt(None, f"refused: {exc.detail}")
        except TimeoutError:
            return Attempt(None, f"no answer within {self.timeout_s:g} s")
        except httpcore.TimeoutException as exc:
            return Attempt(None, f"timed out ({type(exc).__name__})")
        except httpcore.ConnectError as exc:
            return Attempt(None, f"could not connect: {exc or 'connection refused'}")
        except (httpcore.NetworkError, httpcore.ProtocolError, OSError) as exc:
            return Attempt(None, f"connection failed: {type(exc).__name__}: {exc}")

    async def _post(self, url: str, headers: dict[str, str], body: bytes) -> Attempt:
        sent = [
            ("Content-Type", "application/json"),
            ("User-Agent", USER_AGENT),
            *headers.items(),
        ]
        timeout = {
            "connect": self.connect_timeout_s,
            "read": self.timeout_s,
            "write": self.timeout_s,
            "pool": self.timeout_s,
        }
        async with self.pool.stream(
            "POST", url, headers=sent, content=body, extensions={"timeout": timeout}
        ) as response:
            got = bytearray()
            async for chunk in response.aiter_stream():
                got += chunk
                if len(got) >= self.max_response_bytes:
                    break  # the rest is not read: the connection is dropped, not reused
        status = response.status
        if 200 <= status < 300:
            return Attempt(status, None)
        if 300 <= status < 400:
            return Attempt(status, f"answered {status} (redirects are not followed)")
        text = bytes(got[:200]).decode("utf-8", "replace").strip()
        return Attempt(status, f"answered {status}" + (f": {text}" if text else ""))
