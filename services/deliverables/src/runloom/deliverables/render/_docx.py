"""Report as DOCX (python-docx): headings, claims with numbered citations, one sources list."""

from __future__ import annotations

import io

from docx import Document as new_docx
from docx.shared import Pt, RGBColor
from runloom.deliverables.render._model import Document, require_xml_text, safe_url
from runloom.deliverables.render._ooxml import normalize_zip
from runloom.deliverables.render._pdf import fixed_time

ACCENT = RGBColor(0x24, 0x56, 0xC7)
MUTED = RGBColor(0x5B, 0x65, 0x77)


def render_docx(doc: Document) -> bytes:
    require_xml_text(doc, "docx")
    c = doc.content
    d = new_docx()
    props = d.core_properties
    props.title = c.title
    props.subject = c.question
    props.author = "Runloom"
    when = fixed_time(c.generated_at).replace(tzinfo=None)
    props.created = when
    props.modified = when
    props.last_modified_by = "Runloom"
    props.revision = 1

    d.add_heading(c.title, level=0)
    q = d.add_paragraph()
    run = q.add_run(c.question)
    run.italic = True
    run.font.color.rgb = MUTED
    if c.summary:
        d.add_paragraph(c.summary)
    if c.partial or c.missing:
        p = d.add_paragraph()
        p.add_run("Partial report. Missing:").bold = True
        for m in c.missing or ["(not stated)"]:
            d.add_paragraph(m, style="List Bullet")

    for section in c.sections:
        d.add_heading(section.title, level=1)
        if section.summary:
            d.add_paragraph(section.summary)
        for claim in section.claims:
            p = d.add_paragraph(style="List Bullet")
            p.add_run(claim.text)
            for n in doc.numbers(claim.citations):
                r = p.add_run(f"[{n}]")
                r.font.superscript = True
                r.font.color.rgb = ACCENT
            if claim.flagged:
                r = p.add_run(" (unsupported)")
                r.italic = True

    d.add_heading("Sources", level=1)
    for n in doc.sources:
        p = d.add_paragraph()
        p.add_run(f"[{n.number}] ").bold = True
        p.add_run(n.source.title).bold = True
        if n.source.url:
            p.add_run("\n")
            u = p.add_run(n.source.url)
            u.font.size = Pt(9)
            u.font.color.rgb = ACCENT if safe_url(n.source.url) else MUTED
        for passage in n.passages:
            qp = d.add_paragraph(style="Quote")
            qp.add_run(f"“{passage}”").font.size = Pt(9.5)
    buf = io.BytesIO()
    d.save(buf)
    return normalize_zip(buf.getvalue())
