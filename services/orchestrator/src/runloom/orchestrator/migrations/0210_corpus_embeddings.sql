-- Orchestrator: dense embeddings of corpus chunks (all-MiniLM-L6-v2, 384 floats, unit length)
-- beside the full-text index, for hybrid retrieval. One row per chunk; a chunk without a row
-- is not embedded yet (the embedding job fills it in) and is still found by keyword search.
-- Self-contained (it names only `chunks`), so it moves with the corpus tables as one piece.
-- pgvector must be created by a superuser where the migrating role is not one (managed
-- PostgreSQL, per-service roles): IF NOT EXISTS then passes without privileges.

CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE chunk_embeddings (
    chunk_id    text PRIMARY KEY REFERENCES chunks(id) ON DELETE CASCADE,
    tenant_id   text NOT NULL,
    model       text NOT NULL,
    embedding   vector(384) NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
-- Cosine distance (`<=>`) over unit vectors; searches filter by tenant after the index scan
-- (hnsw.iterative_scan lets the scan go on until enough rows of the tenant are found).
CREATE INDEX chunk_embeddings_hnsw ON chunk_embeddings USING hnsw (embedding vector_cosine_ops);
CREATE INDEX chunk_embeddings_tenant ON chunk_embeddings (tenant_id);
