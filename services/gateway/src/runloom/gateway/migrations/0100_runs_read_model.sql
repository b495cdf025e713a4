-- Gateway: more of the runs read model, and the secret that signs stream tokens.

ALTER TABLE runs ADD COLUMN cancel_requested boolean NOT NULL DEFAULT false;
ALTER TABLE runs ADD COLUMN missing jsonb NOT NULL DEFAULT '[]'::jsonb;
ALTER TABLE runs ADD COLUMN terminal_type text;
ALTER TABLE runs ADD COLUMN started_count integer NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN idempotency_key text;

CREATE INDEX run_events_run_stream_seq ON run_events (run_id, stream_seq);

-- Shared by every gateway replica, so a token from one is accepted by all.
CREATE TABLE gateway_secrets (
    name        text PRIMARY KEY,
    value       bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
