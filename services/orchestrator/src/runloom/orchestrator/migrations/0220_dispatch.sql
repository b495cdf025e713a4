-- Fair dispatch (runloom.orchestrator.dispatch): runs waiting to start, per tenant, and the
-- dispatcher's weighted round-robin state. The event log stays the truth of each run; these
-- rows only say who waits and who holds a slot.
CREATE TABLE run_queue (
    run_id          text PRIMARY KEY,
    tenant_id       text NOT NULL,
    command_id      text NOT NULL,        -- the start or resume command that queued it
    trace           text,                 -- traceparent of that command's processing
    enqueued_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    dispatched_at   timestamptz,          -- NULL: waiting; set: handed out, holds a slot
    dispatches      integer NOT NULL DEFAULT 0,
    again           boolean NOT NULL DEFAULT false,  -- a resume came while it held its slot
    told_position   integer,              -- what its last run.queued said
    told_reason     text
);
CREATE INDEX run_queue_waiting ON run_queue (tenant_id, enqueued_at, run_id)
    WHERE dispatched_at IS NULL;

-- Per tenant: its dispatch policy (from its last start command) and its virtual time in the
-- weighted round-robin (stride scheduling: each dispatch adds 1/weight).
CREATE TABLE tenant_dispatch (
    tenant_id        text PRIMARY KEY,
    concurrent_runs  integer NOT NULL,
    weight           double precision NOT NULL,
    pass             double precision NOT NULL DEFAULT 0
);

-- The platform's capacity: each live replica's slots, renewed every few seconds.
CREATE TABLE dispatch_slots (
    worker   text PRIMARY KEY,
    slots    integer NOT NULL,
    seen_at  timestamptz NOT NULL
);

-- The round-robin's clock: the virtual time of the last dispatch. A tenant back from idle
-- starts here, so it cannot bank credit while it had nothing waiting.
CREATE TABLE dispatch_clock (
    one    boolean PRIMARY KEY DEFAULT true CHECK (one),
    clock  double precision NOT NULL DEFAULT 0
);
INSERT INTO dispatch_clock DEFAULT VALUES;
