"""Report as one standalone HTML file: inline CSS, citations link to the sources section."""

from __future__ import annotations

from html import escape

from runloom.deliverables.render._model import Document, Numbered, safe_url

CSS = """
:root { color-scheme: light dark; --fg:#1d2433; --muted:#5b6577; --accent:#2456c7; --bg:#fff;
  --panel:#f4f6fa; }
@media (prefers-color-scheme: dark) { :root { --fg:#e6e9ef; --muted:#a3acbd; --accent:#8fb0ff;
  --bg:#131722; --panel:#1c2130; } }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--fg);
  font:16px/1.6 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif; }
main, header.site, nav.site, footer.site { max-width: 46rem; margin: 0 auto; padding: 0 1.25rem; }
h1 { font-size: 2rem; line-height: 1.2; margin: 2rem 0 .5rem; }
h2 { font-size: 1.35rem; margin: 2.2rem 0 .6rem; border-bottom: 1px solid var(--panel);
  padding-bottom: .3rem; }
.question { color: var(--muted); font-style: italic; margin-top: 0; }
.partial { background: var(--panel); border-left: 4px solid #d08b00; padding: .6rem 1rem; }
ul.claims { padding-left: 1.2rem; } ul.claims li { margin: .45rem 0; }
ul.toc { list-style: none; padding-left: 0; } ul.toc li { margin: .3rem 0; }
sup.cite a { text-decoration: none; color: var(--accent); font-size: .8em; }
.flag { color: #b3261e; font-size: .85em; }
ol.sources li { margin: .8rem 0; } ol.sources li:target { background: var(--panel); }
blockquote { margin: .35rem 0 0; padding: .2rem .8rem; border-left: 3px solid var(--panel);
  color: var(--muted); font-size: .92em; }
a { color: var(--accent); }
header.site { padding-top: 1rem; font-weight: 600; }
header.site a { color: var(--fg); text-decoration: none; }
nav.site { display:flex; gap:.4rem 1rem; flex-wrap:wrap; padding-top:.6rem; padding-bottom:.6rem;
  font-size:.95rem; border-bottom:1px solid var(--panel); }
nav.site a[aria-current] { color: var(--fg); font-weight: 600; text-decoration: none; }
footer.site { color: var(--muted); font-size: .85rem; margin: 3rem auto 2rem; }
"""


def e(text: str) -> str:
    return escape(text, quote=True)


def cite_html(doc: Document, numbers: list[int], href_prefix: str = "") -> str:
    return "".join(
        f'<sup class="cite"><a href="{href_prefix}#src-{n}" '
        f'title="{e(doc.sources[n - 1].source.title)}">[{n}]</a></sup>'
        for n in numbers
    )


def claims_html(doc: Document, section_index: int, href_prefix: str = "") -> str:
    section = doc.sections[section_index]
    parts: list[str] = []
    if section.summary:
        parts.append(f"<p>{e(section.summary)}</p>")
    items = []
    for claim in section.claims:
        flag = ' <span class="flag">(unsupported)</span>' if claim.flagged else ""
        cites = cite_html(doc, doc.numbers(claim.citations), href_prefix)
        items.append(f'<li id="claim-{e(claim.claim_id)}">{e(claim.text)}{cites}{flag}</li>')
    if items:
        parts.append('<ul class="claims">' + "".join(items) + "</ul>")
    return "\n".join(parts)


def partial_html(doc: Document) -> str:
    c = doc.content
    if not (c.partial or c.missing):
        return ""
    items = "".join(f"<li>{e(m)}</li>" for m in c.missing) or "<li>(not stated)</li>"
    return f'<div class="partial"><strong>Partial report.</strong> Missing:<ul>{items}</ul></div>'


def source_item(n: Numbered) -> str:
    url = safe_url(n.source.url)
    title = e(n.source.title)
    head = f'<a href="{e(url)}" rel="noreferrer">{title}</a>' if url else title
    if url:
        head += f"<br><small>{e(url)}</small>"
    quotes = "".join(f"<blockquote>{e(p)}</blockquote>" for p in n.passages)
    return f'<li id="{n.anchor}" value="{n.number}">{head}{quotes}</li>'


def sources_html(doc: Document) -> str:
    return '<ol class="sources">' + "\n".join(source_item(n) for n in doc.sources) + "</ol>"


def page(title: str, body: str, *, css_href: str | None = None, lang: str = "en") -> str:
    style = f'<link rel="stylesheet" href="{e(css_href)}">' if css_href else f"<style>{CSS}</style>"
    return (
        f'<!DOCTYPE html>\n<html lang="{lang}">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{e(title)}</title>\n{style}\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


def render_html(doc: Document) -> bytes:
    c = doc.content
    body = [f"<main>\n<h1>{e(c.title)}</h1>", f'<p class="question">{e(c.question)}</p>']
    if c.summary:
        body.append(f"<p>{e(c.summary)}</p>")
    body.append(partial_html(doc))
    if doc.sections:
        toc = "".join(
            f'<li><a href="#sec-{i + 1}">{e(s.title)}</a></li>' for i, s in enumerate(doc.sections)
        )
        body.append(f'<nav aria-label="Contents"><ul class="toc">{toc}</ul></nav>')
    for i, section in enumerate(doc.sections):
        body.append(f'<section id="sec-{i + 1}"><h2>{e(section.title)}</h2>')
        body.append(claims_html(doc, i))
        body.append("</section>")
    body.append(f'<section id="sources"><h2>Sources</h2>{sources_html(doc)}</section>\n</main>')
    return page(c.title, "\n".join(body)).encode("utf-8")
