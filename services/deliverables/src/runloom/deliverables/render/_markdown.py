"""Report as Markdown (CommonMark): claims with numbered citations, one sources list."""

from __future__ import annotations

import re

from runloom.deliverables.render._model import Document, safe_url

_SPECIAL = re.compile(r"([\\`*_{}\[\]<>()#+!|~&])")
_LIST_START = re.compile(r"^(\s*)(?:([-=])|(\d+)\.)")


def md_escape(text: str) -> str:
    """Escape Markdown syntax so text renders as written (no accidental links or emphasis)."""
    flat = _SPECIAL.sub(r"\\\1", text).replace("\n", " ").replace("\r", " ")
    # A paragraph that starts like a list item or a heading underline stays a paragraph.
    return _LIST_START.sub(
        lambda m: m.group(1) + ("\\" + m.group(2) if m.group(2) else m.group(3) + "\\."), flat
    )


def cite_md(numbers: list[int]) -> str:
    return "".join(f"[\\[{n}\\]](#src-{n})" for n in numbers)


def render_markdown(doc: Document) -> bytes:
    c = doc.content
    out: list[str] = [f"# {md_escape(c.title)}", "", f"*{md_escape(c.question)}*", ""]
    if c.summary:
        out += [md_escape(c.summary), ""]
    if c.partial or c.missing:
        out += ["> **Partial report.** Missing:", ">"]
        out += [f"> - {md_escape(m)}" for m in c.missing] or ["> - (not stated)"]
        out.append("")
    for section in c.sections:
        out += [f"## {md_escape(section.title)}", ""]
        if section.summary:
            out += [md_escape(section.summary), ""]
        for claim in section.claims:
            flag = " *(unsupported)*" if claim.flagged else ""
            out.append(f"- {md_escape(claim.text)} {cite_md(doc.numbers(claim.citations))}{flag}")
        out.append("")
    out += ["## Sources", ""]
    for n in doc.sources:
        title = md_escape(n.source.title)
        url = safe_url(n.source.url)
        line = f'{n.number}. <a id="{n.anchor}"></a>{title}'
        if url:
            line += " — <" + url.replace(" ", "%20").replace(">", "%3E") + ">"
        out.append(line)
        for passage in n.passages:
            out.append(f"   > {md_escape(passage)}")
    out.append("")
    return "\n".join(out).encode("utf-8")
