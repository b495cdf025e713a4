"""The offline provider: deterministic extractive writing from the retrieved passages.

No network and nothing downloaded: it quotes the passages' sentences closest in meaning to the
sub-question (cosine similarity of all-MiniLM-L6-v2 embeddings, the question's own meaning
counting a little too), each citing its passage. A sentence less similar than
`min_similarity` is not quoted, however many words it shares: a section with no such sentence
is left empty (and the report says what it could not find). `semantic=False` keeps the
keyword writer (sentences ranked by the sub-question's terms they carry), the evaluation's
baseline. Token counts are real counts of this tokenizer over the prompt and the output.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from runloom.contracts.events import Usage
from runloom.corpus import embed, vectors
from runloom.corpus import text as textlib
from runloom.orchestrator.providers.base import (
    INSTRUCTIONS,
    RateLimitHook,
    WriteRequest,
    WriteResult,
    render_prompt,
)

MIN_SIMILARITY = 0.40
"""Cosine similarity to the sub-question below which a sentence is not quoted."""


class OfflineProvider:
    name = "offline"
    model = "extractive-1"

    def __init__(
        self,
        *,
        token_delay_s: float = 0.0,
        max_claims: int = 3,
        semantic: bool = True,
        min_similarity: float = MIN_SIMILARITY,
    ) -> None:
        self.token_delay_s = token_delay_s
        self.max_claims = max_claims
        self.semantic = semantic
        self.min_similarity = min_similarity

    def prompt_tokens(self, request: WriteRequest) -> int:
        return textlib.count_tokens(INSTRUCTIONS) + textlib.count_tokens(render_prompt(request))

    def compose(self, request: WriteRequest) -> str:
        """The section as claim lines: `- sentence [n]`."""
        if self.semantic:
            return self._lines(request, self._by_meaning(request))
        return self._lines(request, self._by_terms(request))

    def _candidates(self, request: WriteRequest) -> list[tuple[int, int, str]]:
        """(passage rank, position, sentence) of every quotable sentence not said before."""
        avoid = set(request.avoid)
        return [
            (rank, pos, sentence)
            for rank, passage in enumerate(request.passages)
            for pos, sentence in enumerate(textlib.sentences(passage.text))
            if textlib.is_prose_sentence(sentence) and sentence not in avoid
        ]

    def _by_meaning(self, request: WriteRequest) -> list[tuple[float, int, int, str]]:
        found = self._candidates(request)
        if not found:
            return []
        texts = [s for _, _, s in found]
        vecs = vectors.vectors_for(
            [request.focus or request.sub_question, request.question, *texts], embed.shared()
        )
        near_sub, near_question = vecs[2:] @ vecs[0], vecs[2:] @ vecs[1]
        scored = []
        for (rank, pos, sentence), sim, context in zip(found, near_sub, near_question, strict=True):
            if sim < self.min_similarity:
                continue  # shares words, perhaps, but not the sub-question's meaning
            score = float(sim) + 0.25 * float(context) - 0.01 * rank - 0.002 * pos
            scored.append((score, rank, pos, sentence))
        return scored

    def _by_terms(self, request: WriteRequest) -> list[tuple[float, int, int, str]]:
        terms = {textlib.stem(w) for w in textlib.content_words(request.sub_question)}
        terms |= {textlib.stem(w) for w in textlib.content_words(request.section_title)}
        context = {textlib.stem(w) for w in textlib.content_words(request.question)} - terms
        scored: list[tuple[float, int, int, str]] = []
        for rank, pos, sentence in self._candidates(request):
            words = {textlib.stem(w) for w in textlib.content_words(sentence)}
            overlap = len(terms & words)
            if overlap == 0:
                continue
            # The section's terms first, the question's other terms next; then earlier
            # (better ranked) passages and earlier positions.
            score = overlap + 0.5 * len(context & words) - 0.15 * rank - 0.02 * pos
            scored.append((score, rank, pos, sentence))
        return scored

    def _lines(self, request: WriteRequest, scored: list[tuple[float, int, int, str]]) -> str:
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
        out = await asyncio.to_thread(self.compose, request)  # embeddings: off the event loop
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
