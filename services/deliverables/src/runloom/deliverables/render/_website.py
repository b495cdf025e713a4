"""A static multi-page website in a zip: index, one page per section, sources; relative links only.

Every link is relative and every page names `style.css` beside it, so the unzipped folder works
from `file://` with no server and no network.
"""

from __future__ import annotations

import io
import zipfile

from runloom.deliverables.render._html import (
    CSS,
    claims_html,
    e,
    page,
    partial_html,
    sources_html,
)
from runloom.deliverables.render._model import Document, slug

# A fixed timestamp: the same content model gives the same zip bytes (content-addressed).
_EPOCH = (1980, 1, 1, 0, 0, 0)


def section_file(doc: Document, index: int) -> str:
    return f"section-{index + 1:02d}-{slug(doc.sections[index].title, 'section', 40)}.html"


def _nav(doc: Document, current: str) -> str:
    home = (
        ""
        if current == "index.html"
        else (f'<header class="site"><a href="index.html">{e(doc.title)}</a></header>')
    )
    links = [(section_file(doc, i), s.title) for i, s in enumerate(doc.sections)]
    links.append(("sources.html", "Sources"))
    items = []
    for href, label in links:
        cur = ' aria-current="page"' if href == current else ""
        items.append(f'<a href="{e(href)}"{cur}>{e(label)}</a>')
    return home + '<nav class="site" aria-label="Sections">' + "".join(items) + "</nav>"


def _pager(doc: Document, index: int) -> str:
    prev = "index.html" if index == 0 else section_file(doc, index - 1)
    nxt = "sources.html" if index == len(doc.sections) - 1 else section_file(doc, index + 1)
    return (
        f'<footer class="site"><a href="{e(prev)}" rel="prev">← Previous</a> · '
        f'<a href="{e(nxt)}" rel="next">Next →</a></footer>'
    )


def site_files(doc: Document) -> dict[str, str]:
    c = doc.content
    files: dict[str, str] = {"style.css": CSS}
    toc = "".join(
        f'<li><a href="{e(section_file(doc, i))}">{e(s.title)}</a></li>'
        for i, s in enumerate(doc.sections)
    )
    index_body = [
        _nav(doc, "index.html"),
        f"<main><h1>{e(c.title)}</h1>",
        f'<p class="question">{e(c.question)}</p>',
    ]
    if c.summary:
        index_body.append(f"<p>{e(c.summary)}</p>")
    index_body.append(partial_html(doc))
    index_body.append(f'<h2>Contents</h2><ul class="toc">{toc}</ul>')
    index_body.append(f'<p><a href="sources.html">Sources ({len(doc.sources)})</a></p></main>')
    files["index.html"] = page(c.title, "\n".join(index_body), css_href="style.css")
    for i, section in enumerate(doc.sections):
        name = section_file(doc, i)
        body = [
            _nav(doc, name),
            f"<main><h1>{e(section.title)}</h1>",
            claims_html(doc, i, href_prefix="sources.html"),
            "</main>",
            _pager(doc, i),
        ]
        files[name] = page(f"{section.title} — {c.title}", "\n".join(body), css_href="style.css")
    body = [
        _nav(doc, "sources.html"),
        f"<main><h1>Sources</h1>{sources_html(doc)}</main>",
    ]
    files["sources.html"] = page(f"Sources — {c.title}", "\n".join(body), css_href="style.css")
    return files


def render_website(doc: Document) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, text in site_files(doc).items():
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, text.encode("utf-8"))
    return buf.getvalue()
