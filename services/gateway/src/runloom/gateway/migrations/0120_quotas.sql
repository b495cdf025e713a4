-- Quotas per tenant (runloom.gateway.quotas): a row per tenant that overrides some limits,
-- and the row '*' holding the platform's defaults (a NULL column: the next level decides).
CREATE TABLE tenant_quotas (
    tenant_id            text PRIMARY KEY,   -- a tenant id, or '*' for the platform default
    requests_per_second  double precision CHECK (requests_per_second > 0),
    burst                double precision CHECK (burst >= 1),
    concurrent_runs      integer CHECK (concurrent_runs >= 1),
    queued_runs          integer CHECK (queued_runs >= 0),
    sse_streams          integer CHECK (sse_streams >= 0),
    weight               double precision CHECK (weight > 0),
    updated_at           timestamptz NOT NULL DEFAULT now()
);

-- API request rate: one token bucket per tenant, shared by every gateway replica
-- (runloom.runtime.buckets).
CREATE TABLE request_buckets (
    key     text PRIMARY KEY,
    tokens  double precision NOT NULL,
    at      timestamptz NOT NULL,
    ok      boolean NOT NULL
);

-- Open SSE streams: a lease per stream, renewed while it streams, so a replica that dies
-- frees its streams when their leases lapse.
CREATE TABLE stream_leases (
    lease_id    text PRIMARY KEY,
    tenant_id   text NOT NULL,
    expires_at  timestamptz NOT NULL
);
CREATE INDEX stream_leases_tenant ON stream_leases (tenant_id, expires_at);

-- Runs accepted and not yet started, counted for the queued-runs quota.
CREATE INDEX runs_waiting ON runs (tenant_id) WHERE status IN ('created', 'queued');
