"""Renderers: pure functions from one content model to the bytes of each format.

`KINDS` says which formats each deliverable kind holds; `render(content, kind, format)`
returns one artifact. Every format numbers the sources the same way (their order in the
content model) and writes nothing that is not in the model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from runloom.contracts.content import ContentModel
from runloom.deliverables.render._deck import render_deck
from runloom.deliverables.render._docx import render_docx
from runloom.deliverables.render._html import render_html
from runloom.deliverables.render._markdown import render_markdown
from runloom.deliverables.render._model import Document, RenderError, slug
from runloom.deliverables.render._pdf import render_pdf
from runloom.deliverables.render._pptx import render_pptx
from runloom.deliverables.render._website import render_website


@dataclass(frozen=True, kw_only=True)
class Format:
    name: str
    """md | html | pdf | docx | zip | pptx"""
    media_type: str
    suffix: str
    """File name ending, e.g. `report.pdf`."""
    render: Callable[[Document], bytes]


KINDS: dict[str, tuple[Format, ...]] = {
    "report": (
        Format(
            name="md",
            media_type="text/markdown; charset=utf-8",
            suffix="report.md",
            render=render_markdown,
        ),
        Format(
            name="html",
            media_type="text/html; charset=utf-8",
            suffix="report.html",
            render=render_html,
        ),
        Format(name="pdf", media_type="application/pdf", suffix="report.pdf", render=render_pdf),
        Format(
            name="docx",
            media_type="application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            suffix="report.docx",
            render=render_docx,
        ),
    ),
    "website": (
        Format(
            name="zip", media_type="application/zip", suffix="website.zip", render=render_website
        ),
    ),
    "slides": (
        Format(
            name="pptx",
            media_type="application/vnd.openxmlformats-officedocument.presentationml.presentation",
            suffix="slides.pptx",
            render=render_pptx,
        ),
        Format(
            name="html",
            media_type="text/html; charset=utf-8",
            suffix="slides.html",
            render=render_deck,
        ),
    ),
}


def formats_of(kind: str, requested: list[str] | None = None) -> tuple[Format, ...]:
    """The formats to render for a kind (all when `requested` is empty).

    Raises ValueError naming what is known when the kind or a format is not.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown deliverable kind {kind!r}; known kinds: {', '.join(KINDS)}")
    known = KINDS[kind]
    if not requested:
        return known
    names = [f.name for f in known]
    unknown = [r for r in requested if r not in names]
    if unknown:
        raise ValueError(
            f"unknown format(s) {', '.join(map(repr, unknown))} for {kind}; "
            f"known: {', '.join(names)}"
        )
    return tuple(f for f in known if f.name in requested)


def file_name(content: ContentModel, fmt: Format) -> str:
    return f"{slug(content.title)}-{fmt.suffix}"


def render(content: ContentModel, kind: str, format: str) -> bytes:
    (fmt,) = formats_of(kind, [format])
    return fmt.render(Document(content))


__all__ = [
    "KINDS",
    "Document",
    "Format",
    "RenderError",
    "file_name",
    "formats_of",
    "render",
]
