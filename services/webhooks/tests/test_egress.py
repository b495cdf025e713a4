"""Where a webhook may go. Refusals are decisions tested without a connection: the network
backend under the guard records every connection asked of it, and none is asked."""

from __future__ import annotations

from typing import Any

import httpcore
import pytest
from runloom.webhooks.egress import EgressPolicy, GuardedBackend, Refused, why_forbidden
from runloom.webhooks.sender import Sender


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fd00::1", "private"),
        ("100.64.0.1", "shared"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("192.0.2.1", "special-purpose"),
        ("198.18.0.1", "special-purpose"),
        ("2001:db8::1", "special-purpose"),
        ("::ffff:10.0.0.1", "private"),
        ("::ffff:169.254.169.254", "link-local"),
        ("64:ff9b::a9fe:a9fe", "link-local"),
    ],
)
def test_non_public_addresses_are_refused_with_the_reason(address: str, why: str) -> None:
    reason = why_forbidden(address)
    assert reason is not None and why in reason


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_pass(address: str) -> None:
    assert why_forbidden(address) is None


def test_loopback_only_is_allowed_in_local_development() -> None:
    assert why_forbidden("127.0.0.1", allow_loopback=True) is None
    assert why_forbidden("::1", allow_loopback=True) is None
    assert why_forbidden("10.0.0.1", allow_loopback=True) is not None
    assert why_forbidden("169.254.169.254", allow_loopback=True) is not None


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("http://example.com/hook", "https"),
        ("ftp://example.com/hook", "https"),
        ("example.com/hook", "https"),
        ("https:///hook", "no host"),
        ("https://user:pw@example.com/hook", "password"),
        ("https://example.com:99999/hook", "cannot be read"),
        ("https://example.com/hook#x", "fragment"),
        ("https://example.com/" + "a" * 3000, "longer"),
    ],
)
def test_malformed_or_plain_http_urls_are_refused_in_production(url: str, words: str) -> None:
    with pytest.raises(Refused) as refused:
        EgressPolicy().check_url(url)
    assert refused.value.kind == "invalid_url" and words in refused.value.detail


def test_local_development_takes_http() -> None:
    assert EgressPolicy(allow_local=True).check_url("http://127.0.0.1:9/hook").port == 9


class Recording(httpcore.AsyncNetworkBackend):
    """A network backend that records each connection asked of it and makes none."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, int]] = []

    async def connect_tcp(self, host: str, port: int, *args: Any, **kwargs: Any) -> Any:
        self.asked.append((host, port))
        raise httpcore.ConnectError("the test's backend connects nowhere")

    async def sleep(self, seconds: float) -> None:
        return None


def resolving(*addresses: str) -> Any:
    async def resolve(host: str, port: int) -> list[str]:
        return list(addresses)

    return resolve


async def test_a_name_resolving_to_the_metadata_address_is_refused_before_connecting() -> None:
    policy = EgressPolicy(resolve=resolving("169.254.169.254"))
    with pytest.raises(Refused) as refused:
        await policy.admit("https://metadata.example/latest")
    assert refused.value.kind == "forbidden_address"
    assert "169.254.169.254" in refused.value.detail
    inner = Recording()
    with pytest.raises(Refused):
        await GuardedBackend(policy, inner).connect_tcp("metadata.example", 443)
    assert inner.asked == []


async def test_one_private_address_among_public_ones_refuses_the_name() -> None:
    policy = EgressPolicy(resolve=resolving("93.184.215.14", "10.0.0.7"))
    with pytest.raises(Refused) as refused:
        await policy.admit("https://mixed.example/hook")
    assert "10.0.0.7" in refused.value.detail and "private" in refused.value.detail


async def test_dns_rebinding_is_refused_at_connect_time_without_a_connection() -> None:
    """Public when registered, private when connecting: the attempt fails, nothing connects."""
    answers = [["93.184.215.14"], ["10.0.0.7"]]

    async def rebinding(host: str, port: int) -> list[str]:
        return answers.pop(0)

    policy = EgressPolicy(resolve=rebinding)
    await policy.admit("https://rebind.example/hook")  # admitted: public then
    inner = Recording()
    sender = Sender(policy, network=inner)
    try:
        attempt = await sender.post("https://rebind.example/hook", {}, b"{}")
    finally:
        await sender.close()
    assert not attempt.ok and attempt.status is None
    assert attempt.error is not None and "10.0.0.7" in attempt.error and "private" in attempt.error
    assert inner.asked == []


async def test_the_connection_goes_to_the_checked_address_not_the_name() -> None:
    inner = Recording()
    policy = EgressPolicy(resolve=resolving("93.184.215.14"))
    sender = Sender(policy, network=inner)
    try:
        attempt = await sender.post("https://public.example:8443/hook", {}, b"{}")
    finally:
        await sender.close()
    assert inner.asked == [("93.184.215.14", 8443)]
    assert attempt.error is not None and "could not connect" in attempt.error


async def test_ip_literals_and_loopback_urls_never_reach_the_network_in_production() -> None:
    inner = Recording()
    sender = Sender(EgressPolicy(resolve=resolving("127.0.0.1")), network=inner)
    try:
        for url in (
            "https://169.254.169.254/latest/meta-data",
            "https://[::1]/hook",
            "https://10.0.0.1/hook",
            "https://localhost/hook",
            "http://93.184.215.14/hook",
        ):
            attempt = await sender.post(url, {}, b"{}")
            assert attempt.error is not None and attempt.error.startswith("refused"), url
    finally:
        await sender.close()
    assert inner.asked == []


async def test_a_host_that_does_not_resolve_in_time_is_refused_as_unresolvable() -> None:
    import asyncio

    async def silent(host: str, port: int) -> list[str]:
        await asyncio.Event().wait()  # a resolver that never answers
        return []

    with pytest.raises(Refused) as refused:
        await EgressPolicy(resolve=silent, resolve_timeout_s=0.05).admit("https://slow.example/")
    assert refused.value.kind == "unresolvable" and "0.05 s" in refused.value.detail
