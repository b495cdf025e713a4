-- Gateway: its read model of each run's deliverables, projected from the run's deliverable.*
-- events by the archive consumer (the deliverables service's own tables stay its own).
-- Each row moves only forward: an event applies when its seq is past the row's last_seq, so a
-- redelivered or replayed event changes nothing.

CREATE TABLE run_deliverables (
    run_id         text NOT NULL,
    job_id         text NOT NULL,
    tenant_id      text NOT NULL,
    kind           text NOT NULL,
    status         text NOT NULL,             -- queued | running | retrying | ready | failed
    formats        text[] NOT NULL DEFAULT '{}',
    attempts       integer NOT NULL DEFAULT 0,
    max_attempts   integer,
    error          text,
    retry_at       timestamptz,
    completed_at   timestamptz,
    first_seq      bigint NOT NULL,           -- the event that made the row (listing order)
    last_seq       bigint NOT NULL,           -- the last event applied
    PRIMARY KEY (run_id, job_id)
);

-- Artifacts announced by deliverable.ready: what the download route serves (bytes stay in the
-- artifacts object store).
CREATE TABLE run_artifacts (
    artifact_id  text PRIMARY KEY,
    run_id       text NOT NULL,
    job_id       text NOT NULL,
    tenant_id    text NOT NULL,
    kind         text NOT NULL,
    format       text NOT NULL,
    media_type   text NOT NULL,
    file_name    text NOT NULL,
    size         bigint NOT NULL,
    sha256       text NOT NULL,
    object_name  text NOT NULL,
    position     integer NOT NULL,          -- its place in deliverable.ready (render order)
    created_at   timestamptz NOT NULL
);
CREATE INDEX run_artifacts_run ON run_artifacts (run_id);
