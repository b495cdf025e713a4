-- Billing: tenant period budgets, run accounts, reservations, and the usage ledger.
-- Amounts are exact decimals (USD). A budget check reads and updates the counters of the run
-- account and tenant period rows under row locks (always locked in that order: run, tenant).

-- The tenant's budget per period (NULL row = no tenant budget).
CREATE TABLE billing_budgets (
    tenant_id   text PRIMARY KEY,
    period      text NOT NULL DEFAULT 'month' CHECK (period IN ('month')),
    amount_usd  numeric NOT NULL CHECK (amount_usd >= 0),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- What a tenant has spent (committed) and holds (reserved, not yet committed) in one period.
CREATE TABLE billing_tenant_periods (
    tenant_id     text NOT NULL,
    period_start  date NOT NULL,
    held_usd      numeric NOT NULL DEFAULT 0,
    spent_usd     numeric NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, period_start)
);

-- What a run has spent and holds, with its budget (copied from runs.budget_usd / run.created).
CREATE TABLE billing_run_accounts (
    run_id      text PRIMARY KEY,
    tenant_id   text NOT NULL,
    budget_usd  numeric,
    held_usd    numeric NOT NULL DEFAULT 0,
    spent_usd   numeric NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX billing_run_accounts_tenant ON billing_run_accounts (tenant_id);

-- Reservations, keyed by the caller's idempotency key. A refused request is stored too, so a
-- retried request gets the same answer.
CREATE TABLE billing_reservations (
    id             text PRIMARY KEY,
    tenant_id      text NOT NULL,
    run_id         text NOT NULL,
    period_start   date NOT NULL,
    kind           text NOT NULL,
    provider       text,
    model          text,
    tool           text,
    estimated_usd  numeric NOT NULL CHECK (estimated_usd >= 0),
    status         text NOT NULL
                   CHECK (status IN ('held', 'committed', 'released', 'expired', 'refused')),
    reply          jsonb NOT NULL,
    cost_usd       numeric,
    price_version  text,
    usage          jsonb,
    usage_id       text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz NOT NULL,
    settled_at     timestamptz
);
CREATE INDEX billing_reservations_run ON billing_reservations (run_id);
CREATE INDEX billing_reservations_held_expiry ON billing_reservations (expires_at)
    WHERE status = 'held';

-- The ledger: one row per usage.recorded event, keyed by the event id (delivered twice,
-- counted once).
CREATE TABLE billing_ledger (
    event_id        text PRIMARY KEY,
    usage_id        text NOT NULL,
    tenant_id       text NOT NULL,
    run_id          text NOT NULL,
    kind            text NOT NULL,
    provider        text,
    model           text,
    tool            text,
    input_tokens    bigint NOT NULL DEFAULT 0,
    output_tokens   bigint NOT NULL DEFAULT 0,
    tool_calls      bigint NOT NULL DEFAULT 0,
    cost_usd        numeric NOT NULL,
    reservation_id  text,
    price_version   text,
    step_id         text,
    occurred_at     timestamptz NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX billing_ledger_tenant_time ON billing_ledger (tenant_id, occurred_at);
-- A usage id counted once per run, even if a writer appended it under another event id.
CREATE UNIQUE INDEX billing_ledger_run_usage ON billing_ledger (run_id, usage_id);
CREATE INDEX billing_ledger_reservation ON billing_ledger (reservation_id);
