-- Orchestrator: the document corpus (per tenant), chunked and indexed for full-text search;
-- paused runs awaiting a clarification; per-run checkpoints of written report sections.

CREATE TABLE documents (
    id              text PRIMARY KEY,
    tenant_id       text NOT NULL,
    title           text NOT NULL,
    url             text,
    media_type      text NOT NULL DEFAULT 'text/plain',
    origin          text NOT NULL DEFAULT 'upload',   -- upload | default
    content_sha256  text NOT NULL,
    size_chars      integer NOT NULL,
    chunk_count     integer NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX documents_tenant_created ON documents (tenant_id, created_at DESC, id DESC);

CREATE TABLE chunks (
    id          text PRIMARY KEY,
    document_id text NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    tenant_id   text NOT NULL,
    ordinal     integer NOT NULL,
    title       text NOT NULL,
    text        text NOT NULL,
    tsv         tsvector GENERATED ALWAYS AS (
                    setweight(to_tsvector('english', title), 'A')
                    || setweight(to_tsvector('english', text), 'B')
                ) STORED
);
CREATE INDEX chunks_tsv ON chunks USING GIN (tsv);
CREATE INDEX chunks_tenant ON chunks (tenant_id);
CREATE INDEX chunks_document ON chunks (document_id, ordinal);

-- Runs paused for a clarification: any replica sweeps those whose deadline passed.
CREATE TABLE paused_runs (
    run_id      text PRIMARY KEY,
    tenant_id   text NOT NULL,
    deadline    timestamptz NOT NULL,
    paused_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX paused_runs_deadline ON paused_runs (deadline);

-- Written report sections (verified claims), so a replica taking a run over does not pay
-- for the same section twice.
CREATE TABLE run_checkpoints (
    run_id      text NOT NULL,
    key         text NOT NULL,
    value       jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, key)
);
