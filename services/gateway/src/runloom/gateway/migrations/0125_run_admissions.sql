-- The queued-runs quota, held atomically (runloom.gateway.quotas.admit_run): a row per
-- POST /v1/runs between its quota check and its run's row, counted with the waiting runs
-- under a per-tenant transaction lock, so concurrent POSTs cannot overshoot the limit. A row
-- whose gateway died halfway lapses at expires_at.
CREATE TABLE run_admissions (
    run_id      text PRIMARY KEY,
    tenant_id   text NOT NULL,
    expires_at  timestamptz NOT NULL
);
CREATE INDEX run_admissions_tenant ON run_admissions (tenant_id, expires_at);
