"""Report as PDF (fpdf2), in DejaVu Sans shipped with this package so any Unicode text the
font covers (Latin, Greek, Cyrillic, punctuation, symbols) renders on a fresh machine.

Characters the font lacks (CJK, emoji, control characters) are refused with a RenderError
naming where they are, rather than silently dropped from the page.
"""

from __future__ import annotations

import datetime as dt
import logging
from functools import cache
from importlib import resources
from pathlib import Path

from fpdf import FPDF
from fpdf.enums import XPos, YPos
from runloom.deliverables.render._model import (
    Document,
    RenderError,
    describe_char,
    first_offending,
    safe_url,
)

FONT = "DejaVu"

# fpdf2 subsets the embedded font with fontTools, which logs every table at INFO.
logging.getLogger("fontTools").setLevel(logging.WARNING)
ACCENT = (36, 86, 199)
MUTED = (91, 101, 119)
INK = (29, 36, 51)


def font_dir() -> Path:
    return Path(str(resources.files("runloom.deliverables.render") / "fonts"))


@cache
def covered_codepoints() -> frozenset[int]:
    from fontTools.ttLib import TTFont

    covered: set[int] = set()
    for name in ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf"):
        font = TTFont(str(font_dir() / name), lazy=True)
        cmap = font.getBestCmap()
        covered = set(cmap) if not covered else covered & set(cmap)
    return frozenset(covered)


def fixed_time(generated_at: dt.datetime | None) -> dt.datetime:
    """The content model's own time (UTC), so the same model renders to the same bytes."""
    if generated_at is None:
        return dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
    return generated_at.astimezone(dt.UTC)


class _Pdf(FPDF):
    doc_title = ""

    def footer(self) -> None:
        self.set_y(-14)
        self.set_font(FONT, "", 8)
        self.set_text_color(*MUTED)
        self.cell(0, 6, f"{self.doc_title}  ·  {self.page_no()}/{{nb}}", align="C")


def _check(doc: Document) -> None:
    covered = covered_codepoints()
    hit = first_offending(doc, lambda ch: ch not in "\n\t" and ord(ch) not in covered)
    if hit is not None:
        where, ch, offset = hit
        raise RenderError(
            "pdf",
            f"{where} contains {describe_char(ch)} at offset {offset}, which the PDF font "
            "(DejaVu Sans) cannot draw",
        )


def _clean(text: str) -> str:
    return text.replace("\t", " ").replace("\r", "")


def render_pdf(doc: Document) -> bytes:
    _check(doc)
    c = doc.content
    pdf = _Pdf(format="A4", unit="mm")
    pdf.doc_title = _clean(c.title)[:80]
    pdf.set_creation_date(fixed_time(c.generated_at))
    pdf.set_title(_clean(c.title))
    pdf.set_subject(_clean(c.question))
    pdf.set_creator("Runloom deliverables")
    pdf.set_lang("en")
    fonts = font_dir()
    pdf.add_font(FONT, "", str(fonts / "DejaVuSans.ttf"))
    pdf.add_font(FONT, "B", str(fonts / "DejaVuSans-Bold.ttf"))
    pdf.add_font(FONT, "I", str(fonts / "DejaVuSans-Oblique.ttf"))
    pdf.set_margins(20, 20, 20)
    pdf.set_auto_page_break(True, margin=20)
    pdf.add_page()
    links = {n.number: pdf.add_link() for n in doc.sources}
    width = pdf.epw

    pdf.set_text_color(*INK)
    pdf.set_font(FONT, "B", 22)
    pdf.multi_cell(width, 10, _clean(c.title), align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(2)
    pdf.set_font(FONT, "I", 11)
    pdf.set_text_color(*MUTED)
    pdf.multi_cell(width, 6, _clean(c.question), align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_text_color(*INK)
    pdf.ln(4)
    if c.summary:
        pdf.set_font(FONT, "", 11)
        pdf.multi_cell(width, 6, _clean(c.summary), align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        pdf.ln(3)
    if c.partial or c.missing:
        pdf.set_fill_color(250, 240, 220)
        pdf.set_font(FONT, "B", 10)
        pdf.multi_cell(
            width,
            6,
            "Partial report. Missing:",
            fill=True,
            align="L",
            new_x=XPos.LMARGIN,
            new_y=YPos.NEXT,
        )
        pdf.set_font(FONT, "", 10)
        for m in c.missing or ["(not stated)"]:
            pdf.multi_cell(
                width,
                5.5,
                f"• {_clean(m)}",
                fill=True,
                align="L",
                new_x=XPos.LMARGIN,
                new_y=YPos.NEXT,
            )
        pdf.ln(3)

    for section in c.sections:
        pdf.ln(3)
        pdf.set_font(FONT, "B", 15)
        pdf.start_section(_clean(section.title), level=0)
        pdf.multi_cell(
            width, 8, _clean(section.title), align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT
        )
        pdf.ln(1)
        if section.summary:
            pdf.set_font(FONT, "", 11)
            pdf.multi_cell(
                width, 6, _clean(section.summary), align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT
            )
            pdf.ln(1)
        for claim in section.claims:
            pdf.set_font(FONT, "", 11)
            pdf.set_x(pdf.l_margin)
            pdf.write(6, "•")
            pdf.set_left_margin(25)
            pdf.set_x(25)
            pdf.write(6, _clean(claim.text))
            pdf.set_text_color(*ACCENT)
            pdf.set_font(FONT, "", 8)
            for n in doc.numbers(claim.citations):
                pdf.write(6, f" [{n}]", link=links[n])
            if claim.flagged:
                pdf.set_text_color(179, 38, 30)
                pdf.write(6, " (unsupported)")
            pdf.set_text_color(*INK)
            pdf.set_left_margin(20)
            pdf.ln(7.5)

    pdf.ln(4)
    pdf.set_font(FONT, "B", 15)
    pdf.start_section("Sources", level=0)
    pdf.multi_cell(width, 8, "Sources", align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(1)
    for n in doc.sources:
        pdf.set_link(links[n.number], page=pdf.page_no(), y=pdf.get_y())
        pdf.set_font(FONT, "B", 10)
        pdf.set_text_color(*INK)
        pdf.multi_cell(
            width,
            5.5,
            f"[{n.number}] {_clean(n.source.title)}",
            align="L",
            new_x=XPos.LMARGIN,
            new_y=YPos.NEXT,
        )
        url = safe_url(n.source.url)
        if url:
            pdf.set_font(FONT, "", 8.5)
            pdf.set_text_color(*ACCENT)
            pdf.multi_cell(
                width, 4.5, url, link=url, align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT
            )
        elif n.source.url:
            pdf.set_font(FONT, "", 8.5)
            pdf.set_text_color(*MUTED)
            pdf.multi_cell(
                width, 4.5, _clean(n.source.url), align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT
            )
        pdf.set_font(FONT, "I", 9)
        pdf.set_text_color(*MUTED)
        for passage in n.passages:
            pdf.set_x(26)
            pdf.multi_cell(
                width - 6,
                4.8,
                f"“{_clean(passage)}”",
                align="L",
                new_x=XPos.LMARGIN,
                new_y=YPos.NEXT,
            )
        pdf.ln(2.5)
    return bytes(pdf.output())
