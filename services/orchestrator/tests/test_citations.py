"""Citations are verified in code: unknown sources and invented quotes never pass."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from runloom.contracts.content import Source
from runloom.orchestrator import citations

TEXT = (
    "Context managers are normally invoked using the with statement. The context manager "
    "handles the entry into, and the exit from, the desired runtime context."
)
SOURCES = {1: Source(source_id="c1", title="With", text=TEXT)}


def test_a_quote_found_in_the_source_is_kept() -> None:
    quote = "Context managers are normally invoked using the with statement."
    out = f'- They are used with "with". [1: "{quote}"]'
    draft = citations.verify(out, SOURCES, claim_prefix="s1")
    assert [c.text for c in draft.claims] == ['They are used with "with".']
    assert draft.claims[0].citations[0].passage in TEXT


def test_an_invented_quote_or_unknown_source_drops_the_claim() -> None:
    out = (
        '- Context managers cure colds. [1: "Context managers cure colds."]\n'
        "- Something else entirely. [7]\n"
        "- No citation at all.\n"
    )
    draft = citations.verify(out, SOURCES, claim_prefix="s1")
    assert draft.claims == []
    assert len(draft.dropped) == 3


def test_an_unquoted_claim_is_kept_only_if_the_source_says_it() -> None:
    out = (
        "- The context manager handles the entry into, and the exit from, the desired "
        "runtime context. [1]\n"
        "- The desired runtime context of a context manager handles entry. [1]\n"
        "- Bananas are yellow fruit of tropical plants. [1]\n"
    )
    draft = citations.verify(out, SOURCES, claim_prefix="s1")
    assert len(draft.claims) == 2 and draft.dropped == [
        "Bananas are yellow fruit of tropical plants."
    ]
    for claim in draft.claims:
        assert claim.citations[0].passage in TEXT
    assert citations.check(draft.claims, {"c1": SOURCES[1]}) == []
    assert citations.check(draft.claims, {}) != []


def test_rendering_numbers_sources_in_reading_order() -> None:
    draft = citations.verify(
        "- Context managers are normally invoked using the with statement. [1]",
        SOURCES,
        claim_prefix="s1",
    )
    parts = citations.render_section_parts("With", draft.claims, {"c1": 1})
    assert parts == [
        "## With\n\n",
        "Context managers are normally invoked using the with statement. [1]\n\n",
    ]


def test_the_reference_list_tells_passages_of_one_document_apart() -> None:
    sources = [
        Source(source_id="doc_a-c0000", title="Raise", text="x"),
        Source(source_id="doc_a-c0002", title="Raise", text="y"),
        Source(source_id="doc_b-c0000", title="Try", text="z", url="https://example.org/try"),
    ]
    numbers = {s.source_id: i for i, s in enumerate(sources, start=1)}
    assert citations.render_sources(sources, numbers).splitlines() == [
        "## Sources",
        "",
        "[1] Raise, part 1",
        "[2] Raise, part 3",
        "[3] Try <https://example.org/try>",
    ]


_WORDS = [*TEXT.replace(",", "").replace(".", "").split(), "bananas", "never", "always", "cure"]
_line = st.tuples(
    st.lists(st.sampled_from(_WORDS), min_size=1, max_size=25),
    st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=3),
            st.one_of(
                st.none(),
                st.lists(st.sampled_from(_WORDS), min_size=1, max_size=12).map(" ".join),
                st.sampled_from([TEXT[:60], TEXT[20:90], TEXT]),
            ),
        ),
        max_size=3,
    ),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_line, max_size=6))
def test_no_kept_citation_is_unsupported(lines) -> None:
    out = []
    for words, cites in lines:
        refs = "".join(f'[{n}: "{q}"]' if q is not None else f"[{n}]" for n, q in cites)
        out.append(f"- {' '.join(words)}. {refs}")
    draft = citations.verify("\n".join(out), SOURCES, claim_prefix="p")
    assert citations.check(draft.claims, {"c1": SOURCES[1]}) == []
    assert all(c.citations for c in draft.claims)
    assert len(draft.claims) + len(draft.dropped) <= len(lines)
