-- Retention: how long a tenant's ended runs are kept (no row, or NULL days: kept forever).
CREATE TABLE tenant_retention (
    tenant_id   text PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,
    keep_days   integer CHECK (keep_days IS NULL OR keep_days >= 1),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
