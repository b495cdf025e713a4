-- Provider limits shared by every orchestrator replica (runloom.orchestrator.provider_limits):
-- token buckets per provider key, requests and tokens per minute (runloom.runtime.buckets).
CREATE TABLE provider_buckets (
    key     text PRIMARY KEY,
    tokens  double precision NOT NULL,
    at      timestamptz NOT NULL,
    ok      boolean NOT NULL
);
