"""Where a webhook may go: the URL policy, and a connection guard against DNS rebinding.

Production (the default): only absolute `https` URLs, and never to an address that is
loopback, link-local (the cloud metadata address 169.254.169.254 among them), private,
shared (carrier-grade NAT), multicast, unspecified or reserved: every address the host
resolves to is checked when the endpoint is registered (`EgressPolicy.admit`), and again
each time a connection is made (`GuardedBackend`): the connection goes to the very address
that was checked, so a name that resolves elsewhere by then gains nothing. Local development
(`runloom up`: `allow_local`) also takes `http` and loopback addresses, nothing else.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import SplitResult, urlsplit

import httpcore

Resolver = Callable[[str, int], Awaitable[list[str]]]
"""host, port -> the addresses it resolves to (as text)."""

MAX_URL_CHARS = 2048

_SHARED = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_PRIVATE = tuple(
    ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
)


class Refused(Exception):
    """A URL or address a webhook may not go to; `kind` is the contract's `WebhookRefusal`."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


async def system_resolver(host: str, port: int) -> list[str]:
    """The addresses `host` resolves to (the system's resolver, off the event loop)."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def why_forbidden(address: str, *, allow_loopback: bool = False) -> str | None:
    """Why no webhook may go to `address` (None: it may)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        elif ip in _NAT64:
            ip = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.is_loopback:
        return None if allow_loopback else "a loopback address"
    if ip.is_link_local:
        return "a link-local address (such as the cloud metadata service, 169.254.169.254)"
    if ip.is_unspecified:
        return "the unspecified address"
    if ip.is_multicast:
        return "a multicast address"
    if isinstance(ip, ipaddress.IPv4Address) and ip in _SHARED:
        return "a shared (carrier-grade NAT) address"
    if ip.is_reserved:
        return "a reserved address"
    if any(ip in net for net in _PRIVATE):
        return "a private address"
    if ip.is_private or not ip.is_global:
        return "a special-purpose address (documentation, benchmarking, protocol use)"
    return None


@dataclass(frozen=True, kw_only=True)
class EgressPolicy:
    """What a webhook URL may be. Options are data; `from_env` is the service's."""

    allow_local: bool = False
    """Local development: `http` and loopback addresses too."""
    resolve: Resolver = field(default=system_resolver, compare=False)
    resolve_timeout_s: float = 3.0
    """A host that does not resolve within this long is refused (unresolvable)."""

    def check_url(self, url: str) -> SplitResult:
        """The URL's parts if its form is acceptable; Refused("invalid_url") otherwise."""
        if len(url) > MAX_URL_CHARS:
            raise Refused("invalid_url", f"The URL is longer than {MAX_URL_CHARS} characters.")
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise Refused("invalid_url", f"The URL cannot be read: {exc}.") from None
        schemes = ("https", "http") if self.allow_local else ("https",)
        if parts.scheme not in schemes:
            raise Refused(
                "invalid_url",
                f"The URL's scheme is {parts.scheme or 'missing'!r}; webhooks go to https:// "
                "URLs only" + (" (and http:// in local development)." if self.allow_local else "."),
            )
        if not parts.hostname:
            raise Refused("invalid_url", "The URL has no host; send e.g. https://example.com/hook.")
        if parts.username is not None or parts.password is not None:
            raise Refused(
                "invalid_url",
                "The URL carries a user name or password; authenticate the sender by the "
                "webhook signature instead.",
            )
        if port == 0:
            raise Refused("invalid_url", "The URL's port is 0.")
        if parts.fragment:
            raise Refused("invalid_url", "The URL has a #fragment, which is never sent.")
        return parts

    def check_address(self, host: str, address: str) -> None:
        """Refused("forbidden_address") when `address` (of `host`) is not a public one."""
        why = why_forbidden(address, allow_loopback=self.allow_local)
        if why is not None:
            shown = host if host == address else f"{host} resolves to {address}, which is"
            raise Refused(
                "forbidden_address",
                f"{shown} {why}: webhooks go only to public internet addresses"
                + ("." if self.allow_local else " (loopback only in local development)."),
            )

    async def addresses(self, host: str, port: int) -> list[str]:
        """Every address of `host`, each checked (an IP literal is its own address)."""
        literal = host.strip("[]")
        try:
            ipaddress.ip_address(literal.split("%", 1)[0])
            found = [literal]
        except ValueError:
            found = await self._resolve(host, port)
        for address in found:
            self.check_address(host, address)
        return found

    async def _resolve(self, host: str, port: int) -> list[str]:
        try:
            async with asyncio.timeout(self.resolve_timeout_s):
                found = await self.resolve(host, port)
        except TimeoutError:
            why = f"The host {host!r} did not resolve within {self.resolve_timeout_s:g} s."
            raise Refused("unresolvable", why) from None
        except (OSError, UnicodeError) as exc:
            why = f"The host {host!r} does not resolve ({exc})."
            raise Refused("unresolvable", why) from None
        if not found:
            raise Refused("unresolvable", f"The host {host!r} resolves to no address.")
        return found

    async def admit(self, url: str) -> None:
        """Check a URL as registered: its form, then every address its host resolves to."""
        parts = self.check_url(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        await self.addresses(parts.hostname or "", port)


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, connecting only to addresses the policy admits.

    The host is resolved here, every address checked, and the connection made to a checked
    address (TLS still verifies the host name): nothing is connected before the check.
    """

    def __init__(self, policy: EgressPolicy, inner: httpcore.AsyncNetworkBackend | None = None):
        self.policy = policy
        self.inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await self.policy.addresses(host, port)
        last: Exception | None = None
        for address in addresses:
            try:
                return await self.inner.connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise Refused("invalid_url", "webhooks never go to a unix socket")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)
