"""Slides as PPTX (python-pptx), 16:9: title slide, section slides with the key claims and
their cited passages in the speaker notes, and the sources."""

from __future__ import annotations

import io

from pptx import Presentation
from pptx.dml.color import RGBColor
from pptx.enum.text import MSO_AUTO_SIZE, PP_ALIGN
from pptx.oxml.ns import qn
from pptx.util import Emu, Inches, Pt
from runloom.deliverables.render._model import Document, xml_metadata
from runloom.deliverables.render._ooxml import normalize_zip
from runloom.deliverables.render._pdf import fixed_time
from runloom.deliverables.render._slides import Slide, plan

ACCENT = RGBColor(0x24, 0x56, 0xC7)
MUTED = RGBColor(0x5B, 0x65, 0x77)
INK = RGBColor(0x1D, 0x24, 0x33)
WIDTH, HEIGHT = Inches(13.333), Inches(7.5)


def _place(shape, left: float, top: float, width: float, height: float) -> None:  # type: ignore[no-untyped-def]
    shape.left, shape.top = Inches(left), Inches(top)
    shape.width, shape.height = Inches(width), Inches(height)


def _title_slide(prs, s: Slide) -> None:  # type: ignore[no-untyped-def]
    slide = prs.slides.add_slide(prs.slide_layouts[0])
    title, subtitle = slide.shapes.title, slide.placeholders[1]
    _place(title, 0.9, 2.0, 11.5, 2.0)
    _place(subtitle, 0.9, 4.2, 11.5, 1.6)
    title.text = s.title
    for p in title.text_frame.paragraphs:
        for r in p.runs:
            r.font.size, r.font.bold, r.font.color.rgb = Pt(40), True, INK
    title.text_frame.word_wrap = True
    title.text_frame.auto_size = MSO_AUTO_SIZE.TEXT_TO_FIT_SHAPE
    subtitle.text = s.subtitle or ""
    for p in subtitle.text_frame.paragraphs:
        for r in p.runs:
            r.font.size, r.font.italic, r.font.color.rgb = Pt(20), True, MUTED
    subtitle.text_frame.word_wrap = True
    subtitle.text_frame.auto_size = MSO_AUTO_SIZE.TEXT_TO_FIT_SHAPE
    _notes(slide, s)


def _content_slide(prs, s: Slide) -> None:  # type: ignore[no-untyped-def]
    slide = prs.slides.add_slide(prs.slide_layouts[1])
    title, body = slide.shapes.title, slide.placeholders[1]
    _place(title, 0.7, 0.4, 11.9, 1.1)
    _place(body, 0.7, 1.6, 11.9, 5.5)
    title.text = s.heading
    for p in title.text_frame.paragraphs:
        p.alignment = PP_ALIGN.LEFT
        for r in p.runs:
            r.font.size, r.font.bold, r.font.color.rgb = Pt(30), True, INK
    title.text_frame.word_wrap = True
    title.text_frame.auto_size = MSO_AUTO_SIZE.TEXT_TO_FIT_SHAPE
    tf = body.text_frame
    tf.word_wrap = True
    tf.auto_size = MSO_AUTO_SIZE.TEXT_TO_FIT_SHAPE
    size = Pt(20) if len(s.bullets) + len(s.sources) <= 4 else Pt(17)
    first = True
    if s.kind == "sources":
        for number, source_title, url in s.sources:
            p = tf.paragraphs[0] if first else tf.add_paragraph()
            first = False
            _no_bullet(p)  # the [n] is the marker
            r = p.add_run()
            r.text = f"[{number}] "
            r.font.bold, r.font.size, r.font.color.rgb = True, Pt(15), ACCENT
            r = p.add_run()
            r.text = source_title
            r.font.size, r.font.color.rgb = Pt(15), INK
            if url:
                r = p.add_run()
                r.text = f"  {url}"
                r.font.size, r.font.color.rgb = Pt(11), MUTED
            p.space_after = Pt(6)
    for b in s.bullets:
        p = tf.paragraphs[0] if first else tf.add_paragraph()
        first = False
        r = p.add_run()
        r.text = b.text
        r.font.size, r.font.color.rgb = size, (MUTED if b.lead else INK)
        r.font.italic = b.lead
        if b.cites:
            r = p.add_run()
            r.text = " " + "".join(f"[{n}]" for n in b.cites)
            r.font.size, r.font.color.rgb = Pt(int(size.pt * 0.7)), ACCENT
        if b.flagged:
            r = p.add_run()
            r.text = " (unsupported)"
            r.font.size, r.font.italic = Pt(int(size.pt * 0.7)), True
        p.space_after = Pt(8)
    _notes(slide, s)


def _no_bullet(paragraph) -> None:  # type: ignore[no-untyped-def]
    ppr = paragraph._p.get_or_add_pPr()
    ppr.set("marL", "0")
    ppr.set("indent", "0")
    ppr.insert(0, ppr.makeelement(qn("a:buNone"), {}))


def _notes(slide, s: Slide) -> None:  # type: ignore[no-untyped-def]
    if s.notes:
        slide.notes_slide.notes_text_frame.text = "\n\n".join(s.notes)


def render_pptx(doc: Document) -> bytes:
    c = doc.content
    prs = Presentation()
    prs.slide_width, prs.slide_height = Emu(WIDTH), Emu(HEIGHT)
    props = prs.core_properties
    props.title, props.subject = xml_metadata(c.title), xml_metadata(c.question)
    props.author = "Runloom"
    when = fixed_time(c.generated_at).replace(tzinfo=None)
    props.created = props.modified = when
    props.last_modified_by = "Runloom"
    props.revision = 1
    for s in plan(doc):
        if s.kind == "title":
            _title_slide(prs, s)
        else:
            _content_slide(prs, s)
    buf = io.BytesIO()
    prs.save(buf)
    return normalize_zip(buf.getvalue())
