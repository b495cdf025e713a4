"""Every format opens with a real parser of that format and holds the whole content model."""

from __future__ import annotations

import io
import zipfile
from posixpath import normpath

import msgspec
import pytest
from pptx import Presentation
from runloom.contracts.content import Citation, Claim, ContentModel, Section, Source
from runloom.deliverables.render import KINDS, Document, RenderError, render
from runloom.deliverables.sample import sample_content
from runloom.devkit.deliverables import parse_html, squash, text_of

ALL = [(kind, f.name) for kind, formats in KINDS.items() for f in formats]


@pytest.fixture(scope="module")
def content() -> ContentModel:
    return sample_content()


@pytest.mark.parametrize(("kind", "fmt"), ALL)
def test_every_section_and_cited_source_is_in_every_format(
    content: ContentModel, kind: str, fmt: str
) -> None:
    text = squash(text_of(kind, fmt, render(content, kind, fmt)))
    assert squash(content.title) in text
    for section in content.sections:
        assert squash(section.title) in text, f"{section.title!r} missing from {kind} {fmt}"
    cited = {c.source_id for s in content.sections for cl in s.claims for c in cl.citations}
    assert len(cited) == len(content.sources) == 20
    for source in content.sources:
        assert squash(source.title) in text, f"{source.title!r} missing from {kind} {fmt}"


@pytest.mark.parametrize(("kind", "fmt"), ALL)
def test_same_model_renders_to_the_same_bytes(content: ContentModel, kind: str, fmt: str) -> None:
    assert render(content, kind, fmt) == render(content, kind, fmt)


def test_html_escapes_text_and_links_citations_to_the_sources(content: ContentModel) -> None:
    page = parse_html(render(content, "report", "html"))
    assert "script" not in page.tags  # the claim text "<script>x</script>" stays text
    assert "<script>x</script>" in "".join(page.text)
    cites = [h for h in page.hrefs if h.startswith("#src-")]
    assert cites and all(h[1:] in page.ids for h in cites)
    # numbering: src-n is the n-th source of the model
    assert {f"src-{i}" for i in range(1, 21)} <= page.ids


def test_citation_numbers_agree_across_formats(content: ContentModel) -> None:
    doc = Document(content)
    claim = content.sections[2].claims[1]
    nums = doc.numbers(claim.citations)
    marker = "".join(f"[{n}]" for n in nums)
    assert marker in text_of("report", "docx", render(content, "report", "docx"))
    assert marker in text_of("slides", "pptx", render(content, "slides", "pptx"))
    pdf = squash(text_of("report", "pdf", render(content, "report", "pdf")))
    assert squash(" ".join(f"[{n}]" for n in nums)) in pdf
    md = render(content, "report", "md").decode()
    assert "".join(f"[\\[{n}\\]](#src-{n})" for n in nums) in md
    # and [n] is the same source everywhere: the n-th entry of every sources list
    first = content.sources[nums[0] - 1].title
    assert f"{nums[0]}. " in md.split(f'id="src-{nums[0]}"')[0][-12:]
    assert squash(f"[{nums[0]}]{first}") in pdf


def test_website_works_offline_with_relative_links(content: ContentModel) -> None:
    with zipfile.ZipFile(io.BytesIO(render(content, "website", "zip"))) as zf:
        names = set(zf.namelist())
        assert {"index.html", "sources.html", "style.css"} <= names
        sections = sorted(n for n in names if n.startswith("section-"))
        assert len(sections) == len(content.sections)
        sources_ids = parse_html(zf.read("sources.html")).ids
        for name in names - {"style.css"}:
            page = parse_html(zf.read(name))
            for href in page.hrefs:
                if href.startswith("https://"):
                    continue  # a source's own URL
                assert "://" not in href and not href.startswith("/"), href
                target, _, anchor = href.partition("#")
                assert normpath(target or name) in names, f"{name} links to missing {href}"
                if anchor and target == "sources.html":
                    assert anchor in sources_ids


def test_pptx_has_title_section_and_sources_slides_with_notes(content: ContentModel) -> None:
    prs = Presentation(io.BytesIO(render(content, "slides", "pptx")))
    slides = list(prs.slides)
    assert slides[0].shapes.title.text == content.title
    titles = [s.shapes.title.text for s in slides]
    for section in content.sections:
        assert any(t.startswith(section.title) for t in titles)
    assert titles[-1].startswith("Sources")
    section_slide = slides[1]
    notes = section_slide.notes_slide.notes_text_frame.text
    first_claim = content.sections[0].claims[0]
    for cit in first_claim.citations:
        assert cit.passage in notes
    deck = parse_html(render(content, "slides", "html"))
    assert deck.tags.count("section") == len(slides)
    assert "script" in deck.tags  # keyboard navigation


def _with_claim_text(content: ContentModel, text: str) -> ContentModel:
    sections = list(content.sections)
    claims = list(sections[1].claims)
    claims[0] = msgspec.structs.replace(claims[0], text=text)
    sections[1] = msgspec.structs.replace(sections[1], claims=claims)
    return msgspec.structs.replace(content, sections=sections)


def test_docx_refuses_control_characters_naming_where_they_are(content: ContentModel) -> None:
    crafted = _with_claim_text(content, "Output was \x1b[31mred\x1b[0m in the terminal")
    with pytest.raises(RenderError, match=r"claim 'c2-1'.*U\+001B.*DOCX"):
        render(crafted, "report", "docx")
    # formats that can hold it still render
    assert b"red" in render(crafted, "report", "md")


def test_pdf_refuses_characters_its_font_cannot_draw(content: ContentModel) -> None:
    crafted = _with_claim_text(content, "Latency is 低延迟 in Chinese")
    with pytest.raises(RenderError, match=r"claim 'c2-1'.*U\+4F4E.*cannot draw"):
        render(crafted, "report", "pdf")


def test_a_citation_to_an_unknown_source_is_refused() -> None:
    bad = ContentModel(
        run_id="r",
        title="t",
        question="q",
        sections=[
            Section(
                section_id="s",
                title="S",
                claims=[
                    Claim(
                        claim_id="c", text="x", citations=[Citation(source_id="nope", passage="p")]
                    )
                ],
            )
        ],
        sources=[Source(source_id="a", title="A", text="p")],
    )
    with pytest.raises(RenderError, match="'nope', which is not in the source list"):
        Document(bad)


@pytest.mark.parametrize(
    ("text", "escaped"),
    [
        ("1. not a list", "1\\. not a list"),
        ("- not a bullet", "\\- not a bullet"),
        ("*not emphasis* and [not](a-link)", "\\*not emphasis\\* and \\[not\\]\\(a-link\\)"),
        ("&copy; stays literal, <b> too", "\\&copy; stays literal, \\<b\\> too"),
        ("two\nlines", "two lines"),
    ],
)
def test_markdown_text_renders_as_written(text: str, escaped: str) -> None:
    from runloom.deliverables.render._markdown import md_escape

    assert md_escape(text) == escaped


def test_pdf_citations_link_to_the_sources_and_sections_are_bookmarked(
    content: ContentModel,
) -> None:
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(render(content, "report", "pdf")))
    outline = [item["/Title"] for item in reader.outline]
    assert outline == [s.title for s in content.sections] + ["Sources"]
    first_entry = f"[1] {content.sources[0].title}"
    sources_page = next(
        i for i, page in enumerate(reader.pages) if first_entry in (page.extract_text() or "")
    )
    links = [
        a.get_object()
        for a in reader.pages[0].get("/Annots", [])
        if a.get_object()["/Subtype"] == "/Link"
    ]
    assert len(links) >= 8  # two citations per claim on the first page
    targets = {reader.get_page_number(link["/Dest"][0].get_object()) for link in links}
    assert targets and min(targets) >= sources_page
