-- Core: tenants, API keys, runs read model, event archive, idempotency keys, inbox.

CREATE TABLE tenants (
    id          text PRIMARY KEY,
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    key_hash    text PRIMARY KEY,          -- sha256 hex of the key; the key itself is never stored
    tenant_id   text NOT NULL REFERENCES tenants(id),
    label       text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

-- Read model of runs, projected from events by an idempotent consumer.
CREATE TABLE runs (
    id              text PRIMARY KEY,
    tenant_id       text NOT NULL REFERENCES tenants(id),
    question        text NOT NULL,
    title           text,
    skill           text NOT NULL DEFAULT 'research_report',
    status          text NOT NULL DEFAULT 'created',
    budget_usd      numeric,
    options         jsonb NOT NULL DEFAULT '{}'::jsonb,
    last_seq        integer NOT NULL DEFAULT 0,
    event_count     integer NOT NULL DEFAULT 0,
    source_count    integer NOT NULL DEFAULT 0,
    step_count      integer NOT NULL DEFAULT 0,
    spent_usd       numeric NOT NULL DEFAULT 0,
    partial         boolean NOT NULL DEFAULT false,
    error           text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    ended_at        timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX runs_tenant_created ON runs (tenant_id, created_at DESC, id DESC);

-- Event archive: every event of every run, as stored on the bus (exact bytes).
CREATE TABLE run_events (
    run_id      text NOT NULL,
    seq         integer NOT NULL,
    id          text NOT NULL UNIQUE,
    tenant_id   text NOT NULL,
    type        text NOT NULL,
    stream_seq  bigint,
    raw         bytea NOT NULL,
    time        timestamptz NOT NULL,
    archived_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, seq)
);

-- Idempotency keys for POST requests, per tenant.
CREATE TABLE idempotency_keys (
    tenant_id   text NOT NULL,
    key         text NOT NULL,
    request_hash text NOT NULL,
    run_id      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, key)
);

-- Inbox: processed message ids, for handlers with side effects.
CREATE TABLE inbox (
    consumer    text NOT NULL,
    message_id  text NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, message_id)
);
