"""Slides as one standalone HTML deck: the same slide plan as the PPTX, keyboard navigation
(←/→, PageUp/PageDown, Space, Home/End), `N` toggles the speaker notes, the URL hash keeps
the slide. No network, no external files."""

from __future__ import annotations

from html import escape

from runloom.deliverables.render._model import Document, safe_url
from runloom.deliverables.render._slides import Slide, plan

CSS = """
* { box-sizing: border-box; }
html, body { margin:0; height:100%; background:#0f1320; color:#1d2433;
  font-family: system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif; }
.deck { position:relative; width:100vw; height:100vh; }
.slide { position:absolute; inset:0; margin:auto; width:min(100vw, 177.78vh);
  height:min(56.25vw, 100vh); background:#fff; padding:5% 6%; display:none; overflow:auto;
  font-size:min(2.2vw, 3.9vh); }
.slide.active { display:flex; flex-direction:column; }
.slide h1 { font-size:2.3em; margin:auto 0 .3em; line-height:1.15; }
.slide h2 { font-size:1.55em; margin:0 0 .6em; line-height:1.2; }
.slide .subtitle { font-size:1.1em; color:#5b6577; font-style:italic; margin:0 0 auto; }
.slide ul { margin:0; padding-left:1.1em; } .slide li { margin:.35em 0; line-height:1.35; }
.slide li.lead { list-style:none; margin-left:-1.1em; color:#5b6577; font-style:italic; }
.slide ol.sources { font-size:.72em; } .slide ol.sources small { color:#5b6577; }
.cite { color:#2456c7; font-size:.7em; vertical-align:super; }
.flag { color:#b3261e; font-size:.7em; font-style:italic; }
.slide .num { position:absolute; right:2.5%; bottom:2.5%; font-size:.55em; color:#5b6577; }
aside.notes { display:none; }
body.show-notes .slide.active aside.notes { display:block; position:absolute; left:0; right:0;
  bottom:0; max-height:40%; overflow:auto; background:#fff8e1; border-top:2px solid #d08b00;
  padding:.6em 1.2em; font-size:.55em; }
.hint { position:fixed; left:1em; bottom:.6em; color:#a3acbd; font-size:12px; }
@media print { .slide { display:flex !important; position:relative; page-break-after:always; }
  .hint { display:none; } }
"""

JS = """
(function () {
  var slides = Array.prototype.slice.call(document.querySelectorAll('.slide'));
  var i = 0;
  function show(n) {
    i = Math.max(0, Math.min(slides.length - 1, n));
    slides.forEach(function (s, k) { s.classList.toggle('active', k === i); });
    if (location.hash !== '#' + (i + 1)) history.replaceState(null, '', '#' + (i + 1));
  }
  document.addEventListener('keydown', function (ev) {
    var k = ev.key;
    if (k === 'ArrowRight' || k === 'PageDown' || k === ' ' || k === 'ArrowDown') show(i + 1);
    else if (k === 'ArrowLeft' || k === 'PageUp' || k === 'ArrowUp') show(i - 1);
    else if (k === 'Home') show(0);
    else if (k === 'End') show(slides.length - 1);
    else if (k === 'n' || k === 'N') document.body.classList.toggle('show-notes');
    else return;
    ev.preventDefault();
  });
  document.addEventListener('click', function (ev) {
    if (ev.target.closest('a, aside')) return;
    show(ev.clientX > window.innerWidth / 2 ? i + 1 : i - 1);
  });
  window.addEventListener('hashchange', function () {
    show((parseInt(location.hash.slice(1), 10) || 1) - 1);
  });
  show((parseInt(location.hash.slice(1), 10) || 1) - 1);
})();
"""


def e(text: str) -> str:
    return escape(text, quote=True)


def _slide_html(s: Slide, index: int, total: int) -> str:
    parts = [f'<section class="slide" id="slide-{index}" aria-label="Slide {index} of {total}">']
    if s.kind == "title":
        parts.append(f"<h1>{e(s.title)}</h1>")
        if s.subtitle:
            parts.append(f'<p class="subtitle">{e(s.subtitle)}</p>')
    else:
        parts.append(f"<h2>{e(s.heading)}</h2>")
    if s.bullets:
        items = []
        for b in s.bullets:
            cites = "".join(f"[{n}]" for n in b.cites)
            cite = f' <span class="cite">{cites}</span>' if cites else ""
            flag = ' <span class="flag">(unsupported)</span>' if b.flagged else ""
            cls = ' class="lead"' if b.lead else ""
            items.append(f"<li{cls}>{e(b.text)}{cite}{flag}</li>")
        parts.append("<ul>" + "".join(items) + "</ul>")
    if s.sources:
        items = []
        for number, title, url in s.sources:
            link = safe_url(url)
            u = ""
            if link:
                u = f'<br><small><a href="{e(link)}" rel="noreferrer">{e(link)}</a></small>'
            elif url:
                u = f"<br><small>{e(url)}</small>"
            items.append(f'<li value="{number}">{e(title)}{u}</li>')
        parts.append('<ol class="sources">' + "".join(items) + "</ol>")
    if s.notes:
        notes = "".join(f"<p>{e(n)}</p>" for n in s.notes)
        parts.append(f'<aside class="notes" aria-label="Speaker notes">{notes}</aside>')
    parts.append(f'<div class="num">{index} / {total}</div></section>')
    return "".join(parts)


def render_deck(doc: Document) -> bytes:
    slides = plan(doc)
    body = "\n".join(_slide_html(s, i + 1, len(slides)) for i, s in enumerate(slides))
    html = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{e(doc.title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        f'<div class="deck">\n{body}\n</div>\n'
        '<div class="hint">← → to move · N for notes</div>\n'
        f"<script>{JS}</script>\n</body>\n</html>\n"
    )
    return html.encode("utf-8")
