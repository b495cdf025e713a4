"""What every renderer shares: one numbering of sources, citation markers, text checks."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from runloom.contracts.content import Citation, ContentModel, Section, Source


class RenderError(Exception):
    """A content model that a format cannot hold; the message says what and where."""

    def __init__(self, format: str, message: str) -> None:
        super().__init__(f"{format}: {message}")
        self.format = format


@dataclass(frozen=True)
class Numbered:
    """A source with its number in the one source list every format shares (1-based)."""

    number: int
    source: Source
    passages: tuple[str, ...]
    """The distinct passages cited from it, in order of first citation."""

    @property
    def anchor(self) -> str:
        return f"src-{self.number}"


class Document:
    """A content model prepared for rendering: sources numbered, citations resolved."""

    def __init__(self, content: ContentModel) -> None:
        self.content = content
        self.number: dict[str, int] = {}
        for i, source in enumerate(content.sources, start=1):
            if source.source_id in self.number:
                raise RenderError("any", f"source id {source.source_id!r} appears twice")
            self.number[source.source_id] = i
        passages: dict[str, list[str]] = {s.source_id: [] for s in content.sources}
        for section in content.sections:
            for claim in section.claims:
                for citation in claim.citations:
                    if citation.source_id not in self.number:
                        raise RenderError(
                            "any",
                            f"claim {claim.claim_id!r} in section {section.title!r} cites "
                            f"source {citation.source_id!r}, which is not in the source list",
                        )
                    cited = passages[citation.source_id]
                    if citation.passage not in cited:
                        cited.append(citation.passage)
        self.sources = [
            Numbered(self.number[s.source_id], s, tuple(passages[s.source_id]))
            for s in content.sources
        ]

    @property
    def title(self) -> str:
        return self.content.title

    @property
    def sections(self) -> list[Section]:
        return self.content.sections

    def numbers(self, citations: list[Citation]) -> list[int]:
        """Distinct source numbers of a claim's citations, in citation order."""
        out: list[int] = []
        for c in citations:
            n = self.number[c.source_id]
            if n not in out:
                out.append(n)
        return out

    def texts(self) -> Iterator[tuple[str, str]]:
        """Every piece of text a renderer may write, with where it is (for error messages)."""
        c = self.content
        yield "the title", c.title
        yield "the question", c.question
        if c.summary:
            yield "the summary", c.summary
        for i, m in enumerate(c.missing):
            yield f"missing note {i + 1}", m
        for section in c.sections:
            yield f"the title of section {section.section_id!r}", section.title
            if section.summary:
                yield f"the summary of section {section.section_id!r}", section.summary
            for claim in section.claims:
                yield f"claim {claim.claim_id!r} of section {section.section_id!r}", claim.text
                for cit in claim.citations:
                    yield f"a passage cited by claim {claim.claim_id!r}", cit.passage
        for n in self.sources:
            yield f"the title of source [{n.number}]", n.source.title
            if n.source.url:
                yield f"the url of source [{n.number}]", n.source.url


def first_offending(doc: Document, bad: Callable[[str], bool]) -> tuple[str, str, int] | None:
    """(where, character, offset) of the first character for which `bad` holds, if any."""
    for where, text in doc.texts():
        for i, ch in enumerate(text):
            if bad(ch):
                return where, ch, i
    return None


def describe_char(ch: str) -> str:
    name = unicodedata.name(ch, "") or unicodedata.category(ch)
    return f"U+{ord(ch):04X} ({name})"


_XML_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def xml_incompatible(ch: str) -> bool:
    """XML 1.0 (DOCX, PPTX) cannot hold C0 control characters other than tab and newlines."""
    return _XML_BAD.match(ch) is not None


def xml_metadata(text: str) -> str:
    """Text for a package's metadata fields (title, subject), where XML forbids control
    characters; the document body keeps every character or is refused (`require_xml_text`)."""
    return _XML_BAD.sub("", text)


def require_xml_text(doc: Document, format: str) -> None:
    hit = first_offending(doc, xml_incompatible)
    if hit is not None:
        where, ch, offset = hit
        raise RenderError(
            format,
            f"{where} contains the control character {describe_char(ch)} at offset {offset}, "
            f"which {format.upper()} (XML 1.0) cannot hold; remove it from the source text "
            "and request the deliverable again",
        )


def slug(text: str, fallback: str = "report", limit: int = 60) -> str:
    """An ASCII file-name slug."""
    ascii_ = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    s = re.sub(r"[^A-Za-z0-9]+", "-", ascii_).strip("-").lower()
    if len(s) > limit:
        cut = s[:limit]
        s = cut[: cut.rfind("-")] if "-" in cut[limit // 2 :] else cut
    return s.strip("-") or fallback


def safe_url(url: str | None) -> str | None:
    """Only http(s) URLs become links; anything else (javascript:, data:) stays plain text."""
    if url and re.match(r"^https?://", url, re.IGNORECASE):
        return url
    return None
