-- Usage of erased runs (a tenant's DELETE, retention), kept in aggregate: per tenant, UTC day,
-- kind, provider, model and tool. The ledger rows go with their runs; what they added up to
-- stays, for usage reports and invoices. A whole tenant's erasure removes these rows too.
CREATE TABLE billing_usage_rollup (
    tenant_id      text NOT NULL,
    day            date NOT NULL,
    kind           text NOT NULL,
    provider       text NOT NULL DEFAULT '',
    model          text NOT NULL DEFAULT '',
    tool           text NOT NULL DEFAULT '',
    calls          bigint NOT NULL DEFAULT 0,
    input_tokens   bigint NOT NULL DEFAULT 0,
    output_tokens  bigint NOT NULL DEFAULT 0,
    tool_calls     bigint NOT NULL DEFAULT 0,
    cost_usd       numeric NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, day, kind, provider, model, tool)
);
