-- Webhook endpoints and their deliveries (schema `webhooks`, owned by runloom_webhooks).

CREATE TABLE webhook_endpoints (
    id text PRIMARY KEY,
    tenant_id text NOT NULL,
    url text NOT NULL,
    events text[] NOT NULL,
    description text,
    run_id text,                        -- a run's own webhook: only that run's events
    secret text NOT NULL,
    previous_secret text,               -- after a rotation, until previous_secret_expires_at
    previous_secret_expires_at timestamptz,
    status text NOT NULL DEFAULT 'enabled' CHECK (status IN ('enabled', 'disabled')),
    disabled_reason text,
    disabled_at timestamptz,
    failing_since timestamptz,          -- first failed attempt since the last 2xx
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_endpoints_tenant ON webhook_endpoints (tenant_id, created_at DESC);
CREATE INDEX webhook_endpoints_run ON webhook_endpoints (run_id) WHERE run_id IS NOT NULL;

-- One row per (endpoint, event): the body is fixed when the event arrives, so every attempt
-- sends the same bytes; `webhook-id` is the event id.
CREATE TABLE webhook_deliveries (
    id text PRIMARY KEY,
    endpoint_id text NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    tenant_id text NOT NULL,
    event_id text NOT NULL,
    event_type text NOT NULL,
    run_id text NOT NULL,
    seq bigint NOT NULL,
    stream_seq bigint NOT NULL,         -- RUN_EVENTS sequence: sent once the intake is past it
    body bytea NOT NULL,
    status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts integer NOT NULL DEFAULT 0,
    first_attempt_at timestamptz,
    last_attempt_at timestamptz,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    leased_until timestamptz,           -- a replica is attempting it until then
    response_status integer,
    last_error text,
    delivered_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (endpoint_id, event_id)
);
-- The head of each (endpoint, run): the lowest pending seq goes first.
CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (endpoint_id, run_id, seq) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_recent ON webhook_deliveries (endpoint_id, created_at DESC);
