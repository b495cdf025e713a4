"""What a provider is: it streams text for a writing request and reports its usage."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from runloom.contracts.events import Usage


@dataclass(frozen=True, kw_only=True)
class Passage:
    number: int
    """The reference number the writer cites as `[n]`."""
    source_id: str
    title: str
    text: str


@dataclass(frozen=True, kw_only=True)
class WriteRequest:
    question: str
    """The run's question (with the clarification answer, if any)."""
    section_title: str
    sub_question: str
    passages: list[Passage]
    max_output_tokens: int = 600
    avoid: list[str] = field(default_factory=list)
    """Sentences earlier sections already said: not to be repeated."""
    focus: str = ""
    """What the section must be about, to match by meaning (the sub-question when empty)."""


@dataclass
class WriteResult:
    text: str = ""
    usage: Usage = field(default_factory=Usage)


RateLimitHook = Callable[[float, int], Awaitable[None]]
"""Called with (retry_after_s, attempt) before the provider waits out a 429."""


class ProviderError(Exception):
    """A provider call failed for good; the message says why, for a person."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class Provider(Protocol):
    name: str
    model: str

    def prompt_tokens(self, request: WriteRequest) -> int:
        """Input size estimate, for the budget reservation."""
        ...

    def stream(
        self, request: WriteRequest, result: WriteResult, on_rate_limited: RateLimitHook
    ) -> AsyncIterator[str]:
        """Yield text as it is produced; fill `result` (text and usage) by the end."""
        ...


INSTRUCTIONS = (
    "You write one section of a research report using ONLY the numbered passages given. "
    "Write 2 to 4 short factual sentences, one per line, each starting with '- '. End every "
    'sentence with its citation as [n: "exact quote"], where n is the passage number and the '
    "quote is copied word for word from that passage and supports the sentence. Do not cite "
    "anything that is not in the passages; if they do not answer the question, write nothing."
)


def render_prompt(request: WriteRequest) -> str:
    parts = [
        f"Question: {request.question}",
        f"Section: {request.section_title}",
        f"Sub-question: {request.sub_question}",
        "Passages:",
    ]
    for p in request.passages:
        parts.append(f"[{p.number}] {p.title}\n{p.text}")
    if request.avoid:
        parts.append(
            "Already said in earlier sections (do not repeat):\n" + "\n".join(request.avoid)
        )
    return "\n\n".join(parts)
