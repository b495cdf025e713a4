"""Hybrid retrieval: the full-text ranking and the dense (embedding) ranking, fused.

Each side ranks the tenant's chunks on its own: full-text by `ts_rank_cd` over the keyword
query, dense by cosine distance between the chunk's embedding and the question's (HNSW index).
The two lists are fused by reciprocal rank fusion (score = sum of 1 / (K + rank) over the lists
a chunk is in), which needs no calibration between the two scores. A dense neighbour less
similar than `min_similarity` is left out, so a question about nothing in the corpus still
finds nothing; chunks not embedded yet are found by their keywords alone.
"""

from __future__ import annotations

import asyncpg
from runloom.corpus.embed import Vectors
from runloom.corpus.store import Hit
from runloom.corpus.vectors import literal

RRF_K = 60
"""The usual constant of reciprocal rank fusion: damps the weight of the very first ranks."""
MIN_SIMILARITY = 0.30
"""Cosine similarity below which a dense neighbour is not a match (all-MiniLM-L6-v2)."""

_HYBRID = """
WITH kw AS (
    SELECT c.id, row_number() OVER (ORDER BY ts_rank_cd(c.tsv, q.q, 1) DESC, c.id) AS r
    FROM chunks c, websearch_to_tsquery('english', $2) AS q(q)
    WHERE $2 <> '' AND c.tenant_id = $1 AND c.tsv @@ q.q
      AND ($8::text IS NULL OR c.document_id = $8)
    ORDER BY ts_rank_cd(c.tsv, q.q, 1) DESC, c.id
    LIMIT $4
), near AS (NEAR_SQL
), dense AS (
    SELECT id, row_number() OVER (ORDER BY distance, id) AS r FROM near WHERE distance <= $5
), fused AS (
    SELECT id, sum(1.0 / ($6 + r)) AS score
    FROM (SELECT id, r FROM kw UNION ALL SELECT id, r FROM dense) AS both_lists
    GROUP BY id
), top AS (
    SELECT DISTINCT ON (md5(c.text)) c.id, c.document_id, c.text, d.title, d.url, f.score
    FROM fused f JOIN chunks c ON c.id = f.id JOIN documents d ON d.id = c.document_id
    ORDER BY md5(c.text), f.score DESC, c.id
)
SELECT top.*, ts_headline('english', top.text, websearch_to_tsquery('english', $2),
         'MaxFragments=2, MinWords=8, MaxWords=30, StartSel=**, StopSel=**') AS headline
FROM top
ORDER BY top.score DESC, top.id
LIMIT $7
"""


# Over the tenant's chunks: the HNSW index. Within one document: exact, over its few chunks.
_NEAR_INDEXED = """
    SELECT e.chunk_id AS id, e.embedding <=> $3::vector AS distance
    FROM chunk_embeddings e
    WHERE e.tenant_id = $1 AND $8::text IS NULL
    ORDER BY e.embedding <=> $3::vector
    LIMIT $4"""
_NEAR_DOCUMENT = """
    SELECT e.chunk_id AS id, e.embedding <=> $3::vector AS distance
    FROM chunk_embeddings e JOIN chunks c ON c.id = e.chunk_id
    WHERE c.tenant_id = $1 AND c.document_id = $8
    ORDER BY e.embedding <=> $3::vector
    LIMIT $4"""


async def search(
    pool: asyncpg.Pool,
    tenant_id: str,
    query: str,
    vector: Vectors | None,
    *,
    limit: int = 5,
    candidates: int = 40,
    min_similarity: float = MIN_SIMILARITY,
    document_id: str | None = None,
) -> list[Hit]:
    """The tenant's best passages for a keyword `query` and a question's embedding `vector`.

    `candidates` is how deep each ranking is read before fusion; `document_id` keeps the
    search within one document. Without a vector this is keyword search ranked the same way.
    """
    keywords = query.strip()
    if vector is None and not keywords:
        return []
    # An all-zero vector is nobody's neighbour: it stands in when there is no embedding.
    vec = literal(vector) if vector is not None else "[" + ",".join(["0"] * 384) + "]"
    max_distance = 1.0 - min_similarity if vector is not None else -1.0
    async with pool.acquire() as conn, conn.transaction():
        # Filtered HNSW scans go on until enough rows of the tenant are found (pgvector 0.8).
        await conn.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
        sql = _HYBRID.replace("NEAR_SQL", _NEAR_DOCUMENT if document_id else _NEAR_INDEXED)
        rows = await conn.fetch(
            sql, tenant_id, keywords, vec, candidates, max_distance, RRF_K, limit, document_id
        )
    return [Hit.from_row(r, "score") for r in rows]


async def nearest_documents(
    pool: asyncpg.Pool,
    tenant_id: str,
    vector: Vectors,
    *,
    limit: int = 3,
    min_similarity: float = MIN_SIMILARITY,
) -> list[tuple[str, str, float]]:
    """(id, title, best similarity) of the tenant's documents whose chunks are nearest `vector`.

    Documents with the same title (copies) count once."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
        rows = await conn.fetch(
            "SELECT * FROM ("
            " SELECT DISTINCT ON (d.title) d.id, d.title, 1 - n.distance AS similarity FROM ("
            "   SELECT e.chunk_id, e.embedding <=> $2::vector AS distance FROM chunk_embeddings e"
            "   WHERE e.tenant_id = $1 ORDER BY e.embedding <=> $2::vector LIMIT 40"
            " ) AS n JOIN chunks c ON c.id = n.chunk_id JOIN documents d ON d.id = c.document_id"
            " WHERE 1 - n.distance >= $3 ORDER BY d.title, n.distance, d.id"
            ") AS per_doc ORDER BY similarity DESC, title LIMIT $4",
            tenant_id,
            literal(vector),
            min_similarity,
            limit,
        )
    return [(r["id"], r["title"], float(r["similarity"])) for r in rows]
