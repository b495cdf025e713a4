-- A running run paused without an event saying so (the event store is full: nothing can be
-- appended), as the orchestrator tells it over `runs.stalled`: the reason, what frees it and
-- when it is tried again. `stalled_after_seq` is the seq of the run's last stored event; the
-- projection clears the mark once it applies a later one (the run went on) or the run ends.
ALTER TABLE runs
    ADD COLUMN stalled_reason   text,
    ADD COLUMN stalled_detail   text,
    ADD COLUMN stalled_retry_at timestamptz,
    ADD COLUMN stalled_after_seq bigint;
