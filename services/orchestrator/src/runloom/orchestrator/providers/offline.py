"""The offline provider: deterministic extractive writing from the retrieved passages.

No network and nothing downloaded: it ranks the passages' sentences by how many of the
sub-question's terms they carry and quotes the best ones, each citing its passage. Token
counts are real counts of this tokenizer over the prompt and the output.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from runloom.contracts.events import Usage
from runloom.corpus import text as textlib
from runloom.orchestrator.providers.base import (
    INSTRUCTIONS,
    RateLimitHook,
    WriteRequest,
    WriteResult,
    render_prompt,
)


class OfflineProvider:
    name = "offline"
    model = "extractive-1"

    def __init__(self, *, token_delay_s: float = 0.0, max_claims: int = 3) -> None:
        self.token_delay_s = token_delay_s
        self.max_claims = max_claims

    def prompt_tokens(self, request: WriteRequest) -> int:
        return textlib.count_tokens(INSTRUCTIONS) + textlib.count_tokens(render_prompt(request))

    def compose(self, request: WriteRequest) -> str:
        """The section as claim lines: `- sentence [n]`."""
        terms = {textlib.stem(w) for w in textlib.content_words(request.sub_question)}
        terms |= {textlib.stem(w) for w in textlib.content_words(request.section_title)}
        context = {textlib.stem(w) for w in textlib.content_words(request.question)} - terms
        avoid = set(request.avoid)
        scored: list[tuple[float, int, int, str]] = []
        for rank, passage in enumerate(request.passages):
            for pos, sentence in enumerate(textlib.sentences(passage.text)):
                if not textlib.is_prose_sentence(sentence) or sentence in avoid:
                    continue
                words = {textlib.stem(w) for w in textlib.content_words(sentence)}
                overlap = len(terms & words)
                if overlap == 0:
                    continue
                # The section's terms first, the question's other terms next; then earlier
                # (better ranked) passages and earlier positions.
                score = overlap + 0.5 * len(context & words) - 0.15 * rank - 0.02 * pos
                scored.append((score, rank, pos, sentence))
        scored.sort(key=lambda t: (-t[0], t[1], t[2]))
        chosen: list[tuple[int, int, str]] = []
        seen_words: list[set[str]] = []
        for _, rank, pos, sentence in scored:
            words = set(textlib.content_words(sentence))
            if any(len(words & s) > 0.7 * max(1, len(words)) for s in seen_words):
                continue  # near-duplicate of a sentence already chosen
            chosen.append((rank, pos, sentence))
            seen_words.append(words)
            if len(chosen) >= self.max_claims:
                break
        chosen.sort()
        lines = [f"- {s} [{request.passages[rank].number}]" for rank, _, s in chosen]
        return "\n".join(lines) + ("\n" if lines else "")

    async def stream(
        self, request: WriteRequest, result: WriteResult, on_rate_limited: RateLimitHook
    ) -> AsyncIterator[str]:
        out = self.compose(request)
        pieces = out.split(" ")
        for i, piece in enumerate(pieces):
            token = piece if i == len(pieces) - 1 else piece + " "
            result.text += token
            if self.token_delay_s:
                await asyncio.sleep(self.token_delay_s)
            yield token
        result.usage = Usage(
            input_tokens=self.prompt_tokens(request), output_tokens=textlib.count_tokens(out)
        )
