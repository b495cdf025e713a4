"""Any content model either renders or is refused with a RenderError that says why: never a
crash of another kind (which would be retried as if it were transient, and explain nothing)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from runloom.contracts.content import Citation, Claim, ContentModel, Section, Source
from runloom.deliverables.render import KINDS, Document, RenderError
from runloom.devkit.deliverables import squash, text_of

text = st.text(max_size=60)
some_text = st.text(min_size=1, max_size=300)


@st.composite
def content_models(draw: st.DrawFn) -> ContentModel:
    n_sources = draw(st.integers(0, 4))
    sources = [
        Source(
            source_id=f"s{i}",
            title=draw(some_text),
            text=draw(text),
            url=draw(st.none() | st.just("https://example.org/" + "a" * 200) | text),
        )
        for i in range(n_sources)
    ]
    sections = []
    for k in range(draw(st.integers(0, 3))):
        claims = []
        for j in range(draw(st.integers(0, 3))):
            cites = [
                Citation(source_id=f"s{draw(st.integers(0, n_sources - 1))}", passage=draw(text))
                for _ in range(draw(st.integers(0, 2) if n_sources else st.just(0)))
            ]
            claims.append(
                Claim(
                    claim_id=f"c{k}-{j}",
                    text=draw(some_text),
                    citations=cites,
                    flagged=draw(st.booleans()),
                )
            )
        sections.append(
            Section(
                section_id=f"x{k}",
                title=draw(some_text),
                claims=claims,
                summary=draw(st.none() | text),
            )
        )
    return ContentModel(
        run_id="r",
        title=draw(some_text),
        question=draw(some_text),
        sections=sections,
        sources=sources,
        summary=draw(st.none() | text),
        partial=draw(st.booleans()),
        missing=draw(st.lists(text, max_size=2)),
    )


@pytest.mark.parametrize("fmt", [(k, f) for k, fs in KINDS.items() for f in fs], ids=str)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model=content_models())
def test_renders_or_refuses_with_a_reason(fmt: tuple[str, object], model: ContentModel) -> None:
    kind, f = fmt
    try:
        data = f.render(Document(model))  # type: ignore[attr-defined]
    except RenderError as exc:
        assert str(exc)
        return
    # What rendered opens with a real parser and holds the title.
    assert squash(model.title) in squash(text_of(kind, f.name, data)) or f.name in ("md", "pdf")
