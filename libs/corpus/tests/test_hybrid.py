"""Hybrid retrieval and the embedding job against the real Postgres (pgvector)."""

from __future__ import annotations

import asyncio
import uuid

from runloom.corpus import embed, hybrid, vectors
from runloom.corpus import store as corpus


def _tenant() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


async def _near(pool, tenant: str, query: str, question: str, limit: int = 5):
    vec = embed.shared().embed_one(question)
    return await hybrid.search(pool, tenant, query, vec, limit=limit)


async def test_default_corpus_is_embedded_at_load_and_found_by_meaning(pool) -> None:
    tenant = _tenant()
    await corpus.seed_default_corpus(pool, tenant)
    assert await vectors.pending_count(pool, tenant) == 0
    # No keyword of the question is in the passage that answers it best.
    hits = await _near(pool, tenant, "", "How can a function produce a series of values lazily?")
    assert {"The yield statement", "The standard type hierarchy"} & {h.title for h in hits}
    # Keywords and meaning together: the generators question finds the yield statement's page.
    hits = await _near(
        pool, tenant, "generators yield", "How do generators and the yield statement work?"
    )
    assert "The yield statement" in [h.title for h in hits]
    # Far from everything in the corpus, with no keyword match: nothing, not the nearest noise.
    assert await _near(pool, tenant, "", "Recipe for a sourdough bread with rye flour") == []


async def test_uploads_are_embedded_once_by_the_job_and_stay_in_their_tenant(pool) -> None:
    a, b = _tenant(), _tenant()
    doc = await corpus.add_document(
        pool, a, title="Zebra notes", text="Zebras graze on the savanna in large herds."
    )
    assert await vectors.pending_count(pool, a) == 1
    # The job twice at once (two replicas): each chunk embedded and stored once.
    model = embed.shared()
    counts = await asyncio.gather(
        vectors.embed_pending(pool, model, tenant_id=a, wait=True),
        vectors.embed_pending(pool, model, tenant_id=a, wait=True),
    )
    assert sorted(counts) == [0, 1]
    assert await vectors.pending_count(pool, a) == 0
    question = "Which striped animals eat grass in Africa?"
    assert [h.document_id for h in await _near(pool, a, "", question)] == [doc.id]
    assert await _near(pool, b, "", question) == []
    await corpus.delete_document(pool, a, doc.id)
    left = await pool.fetchval("SELECT count(*) FROM chunk_embeddings WHERE tenant_id=$1", a)
    assert left == 0


async def test_the_worker_embeds_what_is_stored_when_notified(pool) -> None:
    tenant = _tenant()
    worker = vectors.EmbeddingWorker(pool, embed.shared(), interval_s=1.0)
    task = asyncio.create_task(worker.run())
    try:
        await asyncio.sleep(0)  # let it start listening; the first round finds nothing of ours
        await corpus.add_document(pool, tenant, title="Otters", text="Otters hold hands asleep.")
        async with asyncio.timeout(30):
            while await vectors.pending_count(pool, tenant):
                await asyncio.sleep(0.05)
    finally:
        task.cancel()
