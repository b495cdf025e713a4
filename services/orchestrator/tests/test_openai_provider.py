"""The openai provider against a local server speaking the chat completions SSE protocol."""

from __future__ import annotations

import pytest
from runloom.devkit.runs import FakeOpenAI
from runloom.orchestrator.providers import (
    OpenAIProvider,
    Passage,
    ProviderError,
    WriteRequest,
    WriteResult,
)

PASSAGE = (
    "Generators are functions that produce a sequence of values lazily. When a generator "
    "function is called, it returns an iterator known as a generator."
)
REQUEST = WriteRequest(
    question="How do generators work?",
    section_title="Generators",
    sub_question="What are generators?",
    passages=[Passage(number=1, source_id="c1", title="Generators", text=PASSAGE)],
)


async def collect(provider: OpenAIProvider, limits: list[tuple[float, int]]) -> WriteResult:
    result = WriteResult()

    async def on_limit(wait: float, attempt: int) -> None:
        limits.append((wait, attempt))

    pieces = [p async for p in provider.stream(REQUEST, result, on_limit)]
    assert "".join(pieces) == result.text
    return result


def provider_for(server: FakeOpenAI) -> OpenAIProvider:
    return OpenAIProvider(base_url=server.base_url, api_key="sk-test", model="gpt-test")


async def test_streams_text_and_reads_usage_from_the_stream() -> None:
    async with FakeOpenAI() as server:
        limits: list[tuple[float, int]] = []
        result = await collect(provider_for(server), limits)
    assert result.text.startswith("- Generators are functions")
    assert '[1: "Generators are functions' in result.text
    assert result.usage.input_tokens == 321  # the server's count, not ours
    assert result.usage.output_tokens > 1
    body = server.requests[0]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert limits == []


async def test_429_waits_for_retry_after_then_succeeds() -> None:
    async with FakeOpenAI(script=["429"], retry_after=0.3) as server:
        limits: list[tuple[float, int]] = []
        result = await collect(provider_for(server), limits)
    assert limits == [(0.3, 1)]
    assert len(server.requests) == 2 and result.text


async def test_a_cut_stream_is_a_clear_failure() -> None:
    async with FakeOpenAI(script=["cut"]) as server:
        with pytest.raises(ProviderError, match="cut midway") as info:
            await collect(provider_for(server), [])
    assert info.value.retryable
    assert len(server.requests) == 1  # text was already streamed: not silently retried


async def test_unreachable_server_fails_after_retries() -> None:
    p = OpenAIProvider(
        base_url="http://127.0.0.1:9/v1", api_key="", model="m", max_attempts=2, backoff_s=0.01
    )
    with pytest.raises(ProviderError, match="could not reach openai"):
        await collect(p, [])


async def test_server_errors_are_retried_with_backoff() -> None:
    async with FakeOpenAI(script=["500", "500"]) as server:
        p = OpenAIProvider(base_url=server.base_url, api_key="k", model="m", backoff_s=0.01)
        result = await collect(p, [])
    assert len(server.requests) == 3 and result.text


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    import email.utils
    import time

    from runloom.orchestrator.providers.openai import retry_after_seconds

    assert retry_after_seconds("2.5", 9) == 2.5
    assert retry_after_seconds(None, 9) == 9
    assert retry_after_seconds("soon", 9) == 9
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 < retry_after_seconds(later, 9) <= 30
