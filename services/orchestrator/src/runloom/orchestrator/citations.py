"""Claims and citations: parse a writer's output, verify every citation in code, render.

A writer cites passage `n` as `[n]` or `[n: "exact quote"]`. A citation survives only if `n`
names a stored source and its passage is found in that source's text: the quote itself, or,
without a quote, the claim (or the source sentence that shares most of its terms). A claim
left with no verified citation is dropped and counted, never shown as supported.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from runloom.contracts.content import Citation, Claim, Source
from runloom.corpus import text as textlib

_PART = re.compile(r"-c(\d+)$")
_CITE = re.compile(r'\[(\d+)(?::\s*"(.*?)")?\]')


@dataclass
class SectionDraft:
    claims: list[Claim] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    """Claims that no citation supported."""


def _find_passage(claim: str, source_text: str) -> str | None:
    flat_claim = textlib.normalize_space(claim)
    if flat_claim and flat_claim in source_text:
        return flat_claim
    terms = {textlib.stem(w) for w in textlib.content_words(claim)}
    if len(terms) < 3:
        return None
    best, best_overlap = None, 0.0
    for sentence in textlib.sentences(source_text):
        words = {textlib.stem(w) for w in textlib.content_words(sentence)}
        overlap = len(terms & words) / len(terms)
        if overlap > best_overlap:
            best, best_overlap = sentence, overlap
    return best if best is not None and best_overlap >= 0.6 and best in source_text else None


def verify(output: str, numbered: dict[int, Source], *, claim_prefix: str) -> SectionDraft:
    """Turn writer output into verified claims. `numbered` maps `[n]` to stored sources."""
    draft = SectionDraft()
    for raw in output.splitlines():
        line = raw.strip().lstrip("-*• ").strip()
        if not line:
            continue
        cites = list(_CITE.finditer(line))
        claim_text = textlib.normalize_space(_CITE.sub("", line)).rstrip(" ,;")
        if not claim_text:
            continue
        citations: list[Citation] = []
        for m in cites:
            source = numbered.get(int(m.group(1)))
            if source is None:
                continue
            quote = textlib.normalize_space(m.group(2) or "")
            passage = quote if quote and quote in source.text else None
            if passage is None:
                passage = _find_passage(claim_text, source.text)
            if passage and all(c.source_id != source.source_id for c in citations):
                citations.append(Citation(source_id=source.source_id, passage=passage))
        if not citations:
            draft.dropped.append(claim_text)
            continue
        draft.claims.append(
            Claim(
                claim_id=f"{claim_prefix}-{len(draft.claims) + 1}",
                text=claim_text,
                citations=citations,
            )
        )
    return draft


def check(claims: list[Claim], sources: dict[str, Source]) -> list[str]:
    """Problems with claims against sources (empty when every citation holds)."""
    problems = []
    for claim in claims:
        for c in claim.citations:
            src = sources.get(c.source_id)
            if src is None:
                problems.append(f"{claim.claim_id} cites unknown source {c.source_id}")
            elif c.passage not in src.text:
                problems.append(f"{claim.claim_id}: passage not found in {c.source_id}")
    return problems


def render_claim(claim: Claim, numbers: dict[str, int]) -> str:
    refs = "".join(f"[{numbers[c.source_id]}]" for c in claim.citations)
    return f"{claim.text} {refs}"


def render_heading(title: str) -> str:
    return f"# {title}\n\n"


def render_section_parts(title: str, claims: list[Claim], numbers: dict[str, int]) -> list[str]:
    """A section as the pieces it streams in: its heading, then one piece per claim."""
    parts = [f"## {title}\n\n"]
    for i, claim in enumerate(claims):
        sep = " " if i < len(claims) - 1 else "\n\n"
        parts.append(render_claim(claim, numbers) + sep)
    return parts


def render_sources(sources: list[Source], numbers: dict[str, int]) -> str:
    """The reference list; passages of one document say which part of it they are."""
    titles = Counter(s.title for s in sources)
    lines = ["## Sources\n"]
    for s in sources:
        where = f" <{s.url}>" if s.url else ""
        part = _PART.search(s.source_id)
        which = f", part {int(part.group(1)) + 1}" if part and titles[s.title] > 1 else ""
        lines.append(f"[{numbers[s.source_id]}] {s.title}{which}{where}")
    return "\n".join(lines) + "\n"
