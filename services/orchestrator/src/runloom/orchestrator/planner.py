"""The research_report skill's planner: is the question researchable, and which sub-questions.

Deterministic: the same question (and answer) always yields the same plan, so a replica that
takes a run over rebuilds exactly the plan its predecessor proposed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from runloom.corpus import text as textlib

MAX_SUB_QUESTIONS = 4


@dataclass(frozen=True, kw_only=True)
class SubQuestion:
    index: int
    title: str
    question: str
    queries: list[str]
    """websearch_to_tsquery queries, most precise first: the next is tried if one finds nothing."""

    @property
    def query(self) -> str:
        return self.queries[0]

    @property
    def research_step(self) -> str:
        return f"research-{self.index}"

    @property
    def write_step(self) -> str:
        return f"write-{self.index}"


def key_terms(text: str, common: frozenset[str] = frozenset()) -> list[str]:
    """The question's searchable terms; `common` ones (in most passages) only if nothing else."""
    terms = [w for w in textlib.content_words(text) if w not in textlib.VAGUE_WORDS]
    specific = [w for w in terms if w not in common]
    return specific or terms


def too_vague(
    question: str, frequencies: dict[str, int] | None = None, total: int = 0
) -> str | None:
    """Why a question is too vague to research without asking (None when it is fine).

    Vague: it names nothing specific, or its one term is everywhere in the corpus (`python`
    in Python's documentation) or nowhere. `frequencies` counts the passages matching each term.
    """
    terms = key_terms(question)
    if not terms:
        return (
            "The question does not name a topic to research. Which topic, feature or "
            "problem should the report cover?"
        )
    if len(terms) == 1 and frequencies is not None:
        n = frequencies.get(terms[0], 0)
        if n == 0 or (total and n > 0.2 * total):
            how = "is not in your documents" if n == 0 else "is too broad on its own"
            return f"'{terms[0]}' {how}. Which aspect of it should the report cover?"
    return None


def _query(terms: list[str]) -> str:
    return " or ".join(terms)


def _parts(text: str, common: frozenset[str]) -> list[str]:
    pieces = re.split(r",|;|\band\b|\bversus\b|\bvs\.?\b|\?", text)
    return [p.strip(" .!?") for p in pieces if key_terms(p, common)]


def plan(
    question: str, answer: str | None = None, common: frozenset[str] = frozenset()
) -> list[SubQuestion]:
    """Sub-questions for a question (and the clarification answer, if there was one).

    `common` terms match most of the corpus (e.g. 'python' in Python's documentation): they
    are left out of queries where more specific terms exist.
    """
    full = f"{question} {answer}" if answer else question
    terms = key_terms(full, common)[:8]
    parts = _parts(question, common) + (_parts(answer, common) if answer else [])
    subs: list[tuple[str, str, list[str]]] = []
    overview = [" ".join(terms[:3]), _query(terms)] if len(terms) > 1 else [_query(terms)]
    subs.append(("Overview", f"What does the corpus say about: {full.strip()}", overview))
    if len(parts) >= 2:
        for part in parts[: MAX_SUB_QUESTIONS - 1]:
            pt = key_terms(part, common)[:6]
            name = " ".join(pt)
            queries = [" ".join(pt), _query(pt)] if len(pt) > 1 else pt
            subs.append((name[:1].upper() + name[1:], f"What about {name}?", queries))
    else:
        for term in terms[: MAX_SUB_QUESTIONS - 1]:
            others = [t for t in terms if t != term][:1]
            queries = [f"{term} {others[0]}", term] if others else [term]
            subs.append((term.capitalize(), f"What does the corpus say about {term}?", queries))
    seen: set[str] = set()
    out: list[SubQuestion] = []
    for title, sub_q, queries in subs:
        queries = [q for q in dict.fromkeys(queries) if q]
        if not queries or queries[0] in seen:
            continue
        seen.add(queries[0])
        out.append(SubQuestion(index=len(out) + 1, title=title, question=sub_q, queries=queries))
    return out[:MAX_SUB_QUESTIONS]
