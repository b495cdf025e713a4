"""The corpus against the real Postgres: seeding, search, tenancy, deletion."""

from __future__ import annotations

import uuid

import pytest
from runloom.corpus import store as corpus


def _tenant() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


async def test_seed_default_corpus_is_idempotent_and_searchable(pool) -> None:
    tenant = _tenant()
    first = await corpus.seed_default_corpus(pool, tenant)
    again = await corpus.seed_default_corpus(pool, tenant)
    _docs, total = await corpus.list_documents(pool, tenant, limit=500)
    assert first == total == len(corpus.default_corpus()) > 50
    assert again == 0
    hits = await corpus.search(pool, tenant, "context manager with statement", limit=3)
    assert hits and "with" in hits[0].title.lower()
    assert "**" in hits[0].headline  # highlighted terms
    assert all(h.text for h in hits)


async def test_search_is_scoped_to_the_tenant(pool) -> None:
    a, b = _tenant(), _tenant()
    doc = await corpus.add_document(
        pool, a, title="Zebra notes", text="Zebras graze on the savanna in large herds."
    )
    assert [h.document_id for h in await corpus.search(pool, a, "zebras")] == [doc.id]
    assert await corpus.search(pool, b, "zebras") == []
    assert await corpus.delete_document(pool, b, doc.id) is False
    assert await corpus.delete_document(pool, a, doc.id) is True
    assert await corpus.search(pool, a, "zebras") == []


@pytest.mark.parametrize(
    ("title", "text", "message"),
    [("", "some text", "title"), ("Empty", "   \n ", "no text"), ("Big", "x" * 2_000_001, "limit")],
)
async def test_bad_documents_are_refused_clearly(pool, title, text, message) -> None:
    with pytest.raises(corpus.CorpusError, match=message):
        await corpus.add_document(pool, _tenant(), title=title, text=text)
