"""The `openai` provider: OpenAI-compatible chat completions, streamed over SSE with httpx.

Usage comes from the stream itself (`stream_options.include_usage`: a last chunk with empty
`choices` and a `usage` object). A 429 is waited out for its `Retry-After` (the run shows a
`rate_limited` event) and retried; connection errors and 5xx are retried with backoff before
the first token. A stream cut before `data: [DONE]` is a failure of the step, said plainly.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import time
from collections.abc import AsyncIterator

import httpx
from runloom.contracts.events import Usage
from runloom.corpus import text as textlib
from runloom.orchestrator.providers.base import (
    INSTRUCTIONS,
    ProviderError,
    RateLimitHook,
    WriteRequest,
    WriteResult,
    render_prompt,
)


def retry_after_seconds(value: str | None, default: float) -> float:
    """`Retry-After` as seconds: either delta-seconds or an HTTP date."""
    if not value:
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return default
    return max(0.0, when.timestamp() - time.time())


class OpenAIProvider:
    name = "openai"

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        model: str,
        max_attempts: int = 4,
        backoff_s: float = 0.5,
        max_retry_after_s: float = 60.0,
        timeout_s: float = 60.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.model = model
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.max_retry_after_s = max_retry_after_s
        self.timeout = httpx.Timeout(timeout_s, connect=5.0)

    def prompt_tokens(self, request: WriteRequest) -> int:
        return textlib.count_tokens(INSTRUCTIONS) + textlib.count_tokens(render_prompt(request))

    def _body(self, request: WriteRequest) -> dict[str, object]:
        return {
            "model": self.model,
            "stream": True,
            "stream_options": {"include_usage": True},
            "temperature": 0,
            "max_tokens": request.max_output_tokens,
            "messages": [
                {"role": "system", "content": INSTRUCTIONS},
                {"role": "user", "content": render_prompt(request)},
            ],
        }

    async def stream(
        self, request: WriteRequest, result: WriteResult, on_rate_limited: RateLimitHook
    ) -> AsyncIterator[str]:
        headers = {"Accept": "text/event-stream"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        url = f"{self.base_url}/chat/completions"
        body = self._body(request)
        async with httpx.AsyncClient(timeout=self.timeout) as client:
            for attempt in range(1, self.max_attempts + 1):
                last = attempt == self.max_attempts
                try:
                    async with client.stream("POST", url, json=body, headers=headers) as resp:
                        if resp.status_code == 429:
                            await resp.aread()
                            wait = retry_after_seconds(
                                resp.headers.get("retry-after"), self.backoff_s * 2**attempt
                            )
                            if last or wait > self.max_retry_after_s:
                                raise ProviderError(
                                    f"{self.name} kept rate limiting ({attempt} attempts; "
                                    f"asked to wait {wait:.0f} s)",
                                    retryable=True,
                                )
                            await on_rate_limited(wait, attempt)
                            await asyncio.sleep(wait)
                            continue
                        if resp.status_code >= 500 and not last:
                            await resp.aread()
                            await asyncio.sleep(self.backoff_s * 2 ** (attempt - 1))
                            continue
                        if resp.status_code != 200:
                            detail = (await resp.aread()).decode("utf-8", "replace")[:300]
                            raise ProviderError(
                                f"{self.name} answered HTTP {resp.status_code}: {detail}"
                            )
                        async for piece in self._read(resp, request, result):
                            yield piece
                        return
                except httpx.TransportError as exc:
                    if result.text:
                        raise ProviderError(
                            f"the {self.name} stream was cut midway after "
                            f"{len(result.text)} characters ({type(exc).__name__}); the "
                            "section was not finished",
                            retryable=True,
                        ) from exc
                    if last:
                        raise ProviderError(
                            f"could not reach {self.name} at {self.base_url} after {attempt} "
                            f"attempts: {type(exc).__name__}: {exc}",
                            retryable=True,
                        ) from exc
                    await asyncio.sleep(self.backoff_s * 2 ** (attempt - 1))

    async def _read(
        self, resp: httpx.Response, request: WriteRequest, result: WriteResult
    ) -> AsyncIterator[str]:
        done = False
        usage: Usage | None = None
        async for line in resp.aiter_lines():
            if not line.startswith("data:"):
                continue  # blank separators, comments (": keep-alive"), event names
            data = line[5:].strip()
            if data == "[DONE]":
                done = True
                break
            try:
                chunk = json.loads(data)
            except json.JSONDecodeError as exc:
                raise ProviderError(
                    f"{self.name} sent a malformed stream chunk: {data[:120]}"
                ) from exc
            if chunk.get("usage"):
                u = chunk["usage"]
                usage = Usage(
                    input_tokens=int(u.get("prompt_tokens", 0)),
                    output_tokens=int(u.get("completion_tokens", 0)),
                )
            for choice in chunk.get("choices") or []:
                piece = (choice.get("delta") or {}).get("content")
                if piece:
                    result.text += piece
                    yield piece
        if not done:
            raise ProviderError(
                f"the {self.name} stream was cut midway after {len(result.text)} characters "
                "(no [DONE]); the section was not finished",
                retryable=True,
            )
        result.usage = usage or Usage(
            input_tokens=self.prompt_tokens(request),
            output_tokens=textlib.count_tokens(result.text),
        )
