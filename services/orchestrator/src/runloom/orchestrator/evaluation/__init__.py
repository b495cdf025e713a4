"""The research quality bar: retrieval recall and on-topic sections, keyword-only vs hybrid.

Each question of `questions.json` names the default-corpus documents a good answer must draw
on. For each question and each mode the run's own pieces are used as a run uses them: the
planner, one search per sub-question (5 passages, a precise keyword query first, a wider one if
nothing was found), the offline writer and the citation check.

- `before`: runs as they were before hybrid retrieval: the term planner (`planner.plan_terms`),
  full-text search, the keyword writer, given passages with their lines flattened (which hid
  every sentence of a passage holding a grammar line).
- `keyword`: the same with passages as stored (the writer's fix on its own).
- `hybrid`: the question planner (`planner.plan`), hybrid search, the writer by meaning.

Figures:
- recall@5 / recall@10: share of the expected documents among the documents of the top 5 / 10
  passages when the question itself is searched once (keyword: its terms; hybrid: its terms
  fused with its meaning).
- run recall: share of the expected documents among all passages the run's sub-questions keep.
- on-topic sections: a written section is on topic when at least half of its claims cite a
  passage of an expected or related document. The judge is the labels, not the embedding model,
  so the method under test does not grade itself; it is coarse (a long document such as "The
  standard type hierarchy" counts as on topic for any part of it): read it with the sections
  (`make eval EVAL_ARGS=--sections`).
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from dataclasses import dataclass, field
from importlib import resources

import asyncpg
from runloom.contracts.content import Source
from runloom.corpus import store
from runloom.corpus import text as textlib
from runloom.corpus.store import Hit
from runloom.orchestrator import citations, planner, retrieval, writing
from runloom.orchestrator.providers import OfflineProvider

MODES = ("before", "keyword", "hybrid")
HITS_PER_STEP = 5


@dataclass(frozen=True, kw_only=True)
class Case:
    question: str
    expected: list[str]
    """pydoc topic names of the documents a good answer must draw on."""
    related: list[str]
    """Topics of documents that cover the same ground (a section citing them is on topic)."""


@dataclass(frozen=True, kw_only=True)
class SectionResult:
    title: str
    question: str
    claims: list[tuple[str, str]]
    """(claim text, cited document title) of each verified claim."""
    on_topic: bool


@dataclass(kw_only=True)
class CaseResult:
    case: Case
    mode: str
    recall_at_5: float
    recall_at_10: float
    run_recall: float
    sections: list[SectionResult] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    """Sub-questions left without a section (nothing relevant found)."""

    @property
    def on_topic(self) -> int:
        return sum(s.on_topic for s in self.sections)


def cases() -> list[Case]:
    raw = (resources.files(__package__) / "questions.json").read_text(encoding="utf-8")
    return [Case(**q) for q in json.loads(raw)["questions"]]


async def _search(
    pool: asyncpg.Pool,
    tenant_id: str,
    mode: str,
    query: str,
    question: str,
    limit: int,
    document_id: str | None = None,
) -> list[Hit]:
    if mode != "hybrid":
        return await store.search(pool, tenant_id, query, limit=limit)
    return await retrieval.search(
        pool, tenant_id, query, question, limit=limit, document_id=document_id
    )


def _recall(hits: list[Hit], expected: set[str]) -> float:
    return len({h.document_id for h in hits} & expected) / len(expected)


async def evaluate(pool: asyncpg.Pool, tenant_id: str, case: Case, mode: str) -> CaseResult:
    """One question in one mode (the tenant holds the default corpus)."""
    expected = {store.default_document_id(tenant_id, t) for t in case.expected}
    on_topic = expected | {store.default_document_id(tenant_id, t) for t in case.related}
    terms = planner.key_terms(case.question)
    freqs, total = await store.term_frequencies(pool, tenant_id, terms)
    common = frozenset(t for t, n in freqs.items() if total and n > 0.2 * total)
    whole = " or ".join(planner.key_terms(case.question, common))
    top = await _search(pool, tenant_id, mode, whole, case.question, 10)
    if mode != "hybrid":
        subs = planner.plan_terms(case.question, None, common)
    else:
        aspects = await retrieval.aspects(pool, tenant_id, case.question)
        subs = planner.plan(case.question, None, common, aspects)
    found: dict[int, list[Hit]] = {}
    for s in subs:
        hits: list[Hit] = []
        for query in s.queries:
            hits = await _search(pool, tenant_id, mode, query, s.meaning, HITS_PER_STEP, s.document)
            if hits:
                break
        found[s.index] = hits
    kept = [h for hits in found.values() for h in hits]
    result = CaseResult(
        case=case,
        mode=mode,
        recall_at_5=_recall(top[:5], expected),
        recall_at_10=_recall(top, expected),
        run_recall=_recall(kept, expected),
    )
    await _write(case, subs, found, on_topic, result, mode=mode)
    return result


async def _write(
    case: Case,
    subs: list[planner.SubQuestion],
    found: dict[int, list[Hit]],
    expected: set[str],
    result: CaseResult,
    *,
    mode: str,
) -> None:
    """Write each section as a run does (offline writer, then the citation check) and judge it."""
    numbers: dict[str, int] = {}
    sources: dict[str, Source] = {}
    documents: dict[str, tuple[str, str]] = {}
    for hits in found.values():
        for h in hits:
            if h.chunk_id not in numbers:
                numbers[h.chunk_id] = len(numbers) + 1
                sources[h.chunk_id] = Source(
                    source_id=h.chunk_id,
                    title=h.title,
                    text=textlib.normalize_space(h.text),
                    document_id=h.document_id,
                )
                documents[h.chunk_id] = (h.document_id, h.title)
    by_number = {numbers[sid]: src for sid, src in sources.items()}
    provider = OfflineProvider(semantic=mode == "hybrid")
    used: set[str] = set()
    for s in subs:
        hits = found.get(s.index, [])
        if not hits:
            result.dropped.append(s.question)
            continue
        if mode == "before":  # passages flattened, as runs gave them to the writer then
            hits = [dataclasses.replace(h, text=sources[h.chunk_id].text) for h in hits]
        request = writing.write_request(case.question, s, hits, numbers, used)
        draft = citations.verify(provider.compose(request), by_number, claim_prefix="e")
        claims = [c for c in draft.claims if c.text not in used]
        if not claims:
            result.dropped.append(s.question)
            continue
        used.update(c.text for c in claims)
        cited = [documents[c.citations[0].source_id] for c in claims]
        on = sum(doc in expected for doc, _ in cited)
        result.sections.append(
            SectionResult(
                title=s.title,
                question=s.question,
                claims=[(c.text, title) for c, (_, title) in zip(claims, cited, strict=True)],
                on_topic=2 * on >= len(claims),
            )
        )


@dataclass(frozen=True, kw_only=True)
class Summary:
    mode: str
    recall_at_5: float
    recall_at_10: float
    run_recall: float
    sections: int
    on_topic: int
    dropped: int

    @property
    def on_topic_share(self) -> float:
        return self.on_topic / self.sections if self.sections else 0.0


def summarize(results: list[CaseResult], mode: str) -> Summary:
    mine = [r for r in results if r.mode == mode]
    return Summary(
        mode=mode,
        recall_at_5=statistics.fmean(r.recall_at_5 for r in mine),
        recall_at_10=statistics.fmean(r.recall_at_10 for r in mine),
        run_recall=statistics.fmean(r.run_recall for r in mine),
        sections=sum(len(r.sections) for r in mine),
        on_topic=sum(r.on_topic for r in mine),
        dropped=sum(len(r.dropped) for r in mine),
    )


async def evaluate_all(
    pool: asyncpg.Pool, tenant_id: str, modes: tuple[str, ...] = MODES
) -> list[CaseResult]:
    return [await evaluate(pool, tenant_id, c, m) for c in cases() for m in modes]


__all__ = [
    "MODES",
    "Case",
    "CaseResult",
    "SectionResult",
    "Summary",
    "cases",
    "evaluate",
    "evaluate_all",
    "summarize",
]
