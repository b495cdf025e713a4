"""The research_report skill's planner: is the question researchable, and which sub-questions.

Deterministic: the same question (and answer) always yields the same plan, so a replica that
takes a run over rebuilds exactly the plan its predecessor proposed.
"""

from __future__ import annotations

import dataclasses
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
    focus: str = ""
    """What search and writing match by meaning, when not the sub-question itself."""
    document: str | None = None
    """The id of the one document this sub-question is answered from (None: any)."""

    @property
    def meaning(self) -> str:
        return self.focus or self.question

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


def plan_terms(
    question: str, answer: str | None = None, common: frozenset[str] = frozenset()
) -> list[SubQuestion]:
    """The keyword planner: one sub-question per term or comma/and-separated part.

    Kept as the evaluation's keyword-only baseline (`make eval`); runs use `plan`.
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


def plan(
    question: str,
    answer: str | None = None,
    common: frozenset[str] = frozenset(),
    aspects: list[tuple[str, str]] | tuple[tuple[str, str], ...] = (),
) -> list[SubQuestion]:
    """Sub-questions about the user's topic: the question itself, then one per topic it names.

    Topics are the parts of the question (and of the clarification answer) joined by 'and',
    commas or 'versus', each asked as a question of its own ("What are generators, and how do
    they work?"). `aspects` are (document id, title) of the documents nearest the question in
    meaning (`retrieval.aspects`): a question naming one topic asks what each of them says
    about it, answered from that document alone.
    `common` terms match most of the corpus: they stay out of keyword queries where possible.
    """
    full = f"{question} {answer}" if answer else question
    terms = key_terms(full, common)[:8]
    overview = [" ".join(terms[:3]), _query(terms)] if len(terms) > 1 else [_query(terms)]
    asked = full.strip() if full.strip().endswith("?") else full.strip() + "?"
    subs = [SubQuestion(index=0, title="Overview", question=asked, queries=overview)]
    topics = _topics(question, common) + (_topics(answer, common) if answer else [])
    if len(topics) >= 2:
        for topic in topics[: MAX_SUB_QUESTIONS - 1]:
            subs.append(
                SubQuestion(
                    index=0,
                    title=_capital(topic),
                    question=_ask_about(topic),
                    queries=_queries(topic, common),
                )
            )
    else:
        focus = topics[0] if topics else " ".join(terms[:3])
        short = len(focus.split()) <= 4
        for doc_id, title in aspects[: MAX_SUB_QUESTIONS - 1]:
            subs.append(
                SubQuestion(
                    index=0,
                    title=title,
                    question=f"What does '{title}' say about {focus}?"
                    if short
                    else f"What does '{title}' say on: {asked}",
                    queries=overview,
                    focus=asked,
                    document=doc_id,
                )
            )
    return _numbered(subs)


def _numbered(subs: list[SubQuestion]) -> list[SubQuestion]:
    seen: set[str] = set()
    out: list[SubQuestion] = []
    for s in subs:
        queries = [q for q in dict.fromkeys(s.queries) if q]
        if not queries or s.question.lower() in seen:
            continue
        seen.add(s.question.lower())
        out.append(dataclasses.replace(s, index=len(out) + 1, queries=queries))
    return out[:MAX_SUB_QUESTIONS]


_LEAD = re.compile(
    r"^\s*(?:(?:how|what|why|when|where|which|who|can|could|should|would|will|does|do|did|is|"
    r"are|was|were|explain|describe|compare|tell me about|what about)\b\s*)+"
    r"(?:(?:i|you|we|one|to|the difference between)\b\s*)?",
    re.IGNORECASE,
)
_TAIL = re.compile(
    r"\s+(?:work|works|behave|behaves|mean|means|do|does|differ|relate|interact)\s*$",
    re.IGNORECASE,
)
_VERBS = frozenset(
    "handle use write define create make get set call raise catch read open format import "
    "convert compare iterate loop run test declare pass return access customize customise "
    "implement avoid find check delete remove add sort copy".split()
)


def _topics(text: str, common: frozenset[str]) -> list[str]:
    """The topics a question names, as phrases: 'generators', 'the yield statement'."""
    out: list[str] = []
    for piece in re.split(r",|;|\band\b|\bversus\b|\bvs\.?(?=\s)|\?", text):
        phrase = _TAIL.sub("", _LEAD.sub("", piece.strip(" .!?"))).strip(" .!?")
        if phrase and key_terms(phrase, common) and len(phrase.split()) <= 8:
            out.append(phrase)
    return list(dict.fromkeys(out))


def _ask_about(topic: str) -> str:
    words = topic.split()
    if words[0].lower() in _VERBS:
        return f"How do you {topic}?"
    last = words[-1].lower()
    plural = last.endswith("s") and not last.endswith(("ss", "us", "is"))
    return (
        f"What are {topic}, and how do they work?"
        if plural
        else f"What is {topic}, and how does it work?"
    )


def _queries(phrase: str, common: frozenset[str]) -> list[str]:
    pt = key_terms(phrase, common)[:6]
    return [" ".join(pt), _query(pt)] if len(pt) > 1 else pt


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]
