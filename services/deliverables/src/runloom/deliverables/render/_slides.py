"""The slide plan both decks (PPTX and HTML) are drawn from, so they hold the same slides."""

from __future__ import annotations

from dataclasses import dataclass, field

from runloom.deliverables.render._model import Document

MAX_CLAIMS = 5
"""Claims per slide; a longer section continues on further slides."""
MAX_CHARS = 700
"""Characters of claim text per slide, so the text fits at a readable size."""
SOURCES_PER_SLIDE = 8


@dataclass(frozen=True)
class Bullet:
    text: str
    cites: tuple[int, ...] = ()
    flagged: bool = False
    lead: bool = False
    """A section's summary, set apart from its claims."""


@dataclass(frozen=True)
class Slide:
    kind: str
    """title | section | sources"""
    title: str
    subtitle: str | None = None
    bullets: tuple[Bullet, ...] = ()
    notes: tuple[str, ...] = ()
    part: tuple[int, int] | None = None
    """(n, of) when a section spans several slides."""
    sources: tuple[tuple[int, str, str | None], ...] = field(default=())
    """(number, title, url) on a sources slide."""

    @property
    def heading(self) -> str:
        if self.part and self.part[1] > 1:
            return f"{self.title} ({self.part[0]}/{self.part[1]})"
        return self.title


def _chunks(doc: Document, section_index: int) -> list[list[Bullet]]:
    section = doc.sections[section_index]
    bullets: list[Bullet] = []
    if section.summary:
        bullets.append(Bullet(section.summary, lead=True))
    for claim in section.claims:
        bullets.append(
            Bullet(claim.text, tuple(doc.numbers(claim.citations)), flagged=claim.flagged)
        )
    chunks: list[list[Bullet]] = [[]]
    size = 0
    for b in bullets:
        cur = chunks[-1]
        if cur and (len(cur) >= MAX_CLAIMS or size + len(b.text) > MAX_CHARS):
            chunks.append([])
            size = 0
        chunks[-1].append(b)
        size += len(b.text)
    return chunks


def _notes(doc: Document, section_index: int, bullets: list[Bullet]) -> tuple[str, ...]:
    """Speaker notes: the cited passages behind the claims on the slide."""
    section = doc.sections[section_index]
    texts = {b.text for b in bullets if not b.lead}
    notes: list[str] = []
    for claim in section.claims:
        if claim.text not in texts:
            continue
        for cit in claim.citations:
            n = doc.number[cit.source_id]
            line = f"[{n}] {doc.sources[n - 1].source.title}: “{cit.passage}”"
            if line not in notes:
                notes.append(line)
    return tuple(notes)


def plan(doc: Document) -> list[Slide]:
    c = doc.content
    title_notes = [c.summary] if c.summary else []
    if c.partial or c.missing:
        title_notes.append("Partial report. Missing: " + "; ".join(c.missing or ["(not stated)"]))
    slides = [Slide("title", c.title, subtitle=c.question, notes=tuple(title_notes))]
    for i, section in enumerate(doc.sections):
        chunks = _chunks(doc, i)
        for k, chunk in enumerate(chunks):
            slides.append(
                Slide(
                    "section",
                    section.title,
                    bullets=tuple(chunk),
                    notes=_notes(doc, i, chunk),
                    part=(k + 1, len(chunks)),
                )
            )
    entries = [(n.number, n.source.title, n.source.url) for n in doc.sources]
    pages = [entries[i : i + SOURCES_PER_SLIDE] for i in range(0, len(entries), SOURCES_PER_SLIDE)]
    for k, chunk in enumerate(pages or [[]]):
        slides.append(Slide("sources", "Sources", sources=tuple(chunk), part=(k + 1, len(pages))))
    return slides
