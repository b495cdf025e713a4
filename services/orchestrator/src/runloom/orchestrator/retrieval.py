"""Retrieval for a run: hybrid corpus search and the corpus's view of a question.

The sub-question is embedded (all-MiniLM-L6-v2, off the event loop) and searched together
with its keyword query (`runloom.corpus.hybrid`); the planner asks which documents lie
nearest the question to phrase sub-questions about them.
"""

from __future__ import annotations

import asyncio

import asyncpg
from runloom.corpus import embed, hybrid, vectors
from runloom.corpus.store import Hit


async def embedding(text: str) -> embed.Vectors:
    """The text's embedding; the process keeps recent ones, which the writer then reuses."""
    return (await embed_all([text]))[0]


async def embed_all(texts: list[str]) -> embed.Vectors:
    """Embed several texts in one forward pass (e.g. a plan's sub-questions, before their
    parallel searches), off the event loop."""
    return await asyncio.to_thread(vectors.vectors_for, texts, embed.shared())


def prefetch(texts: list[str]) -> asyncio.Task[embed.Vectors]:
    """Start embedding `texts` (one batch, off the event loop) while the caller goes on; await
    the task before the searches that use them, which then find them computed."""
    task = asyncio.create_task(embed_all(texts))
    task.add_done_callback(lambda t: t.cancelled() or t.exception())  # an unawaited failure
    return task


async def search(
    pool: asyncpg.Pool,
    tenant_id: str,
    query: str,
    question: str,
    *,
    limit: int,
    document_id: str | None = None,
) -> list[Hit]:
    """The best passages for a sub-question: its keyword `query` fused with its meaning."""
    vector = await embedding(question)
    return await hybrid.search(pool, tenant_id, query, vector, limit=limit, document_id=document_id)


async def aspects(
    pool: asyncpg.Pool, tenant_id: str, question: str, *, limit: int = 3
) -> list[tuple[str, str]]:
    """(id, title) of the documents nearest the question in meaning, best first."""
    near = await hybrid.nearest_documents(
        pool, tenant_id, await embedding(question), limit=limit, min_similarity=0.35
    )
    return [(doc_id, title) for doc_id, title, _ in near]


def warm_up() -> None:
    """Load the model and the shipped embeddings (once per process)."""
    embed.shared().load()
    vectors.shipped_cache()


async def embedding_job(pool: asyncpg.Pool) -> None:
    """Embed uploaded documents' chunks as they are stored, for as long as the replica runs.

    It first loads the model and the shipped embeddings, off the event loop and while the
    replica starts (readiness does not wait): a run arriving meanwhile waits only for the rest.
    """
    await asyncio.to_thread(warm_up)
    await vectors.EmbeddingWorker(pool, embed.shared()).run()
