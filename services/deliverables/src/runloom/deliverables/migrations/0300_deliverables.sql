-- Deliverables: one row per job (kind of a run's content model) and one per artifact.

-- A job as the deliverables service knows it; the row is locked (advisory lock on job_id)
-- while a replica renders, so two replicas never render the same job at once.
CREATE TABLE deliverable_jobs (
    job_id        text PRIMARY KEY,           -- sha256 of run_id:kind:content_hash
    run_id        text NOT NULL,
    tenant_id     text NOT NULL,
    kind          text NOT NULL,              -- report | website | slides
    content_hash  text NOT NULL,
    formats       text[] NOT NULL DEFAULT '{}',
    status        text NOT NULL DEFAULT 'queued',  -- queued | running | retrying | ready | failed
    attempts      integer NOT NULL DEFAULT 0,
    max_attempts  integer NOT NULL DEFAULT 3,
    error         text,                       -- the last failure, in words a person reads
    retry_at      timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    completed_at  timestamptz
);
CREATE INDEX deliverable_jobs_run ON deliverable_jobs (run_id);

-- Artifacts: bytes live in the JetStream object store under their sha256 (stored once).
CREATE TABLE artifacts (
    job_id       text NOT NULL,
    format       text NOT NULL,
    artifact_id  text NOT NULL UNIQUE,
    run_id       text NOT NULL,
    tenant_id    text NOT NULL,
    kind         text NOT NULL,
    media_type   text NOT NULL,
    file_name    text NOT NULL,
    size         bigint NOT NULL,
    sha256       text NOT NULL,
    object_name  text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, format)
);
CREATE INDEX artifacts_run ON artifacts (run_id);
