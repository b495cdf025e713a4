"""The gateway's storage: the only code that writes its tables.

- `archive`: `run_events` (every run event, copied from the bus) and `runs` (the read model
  projected from them; `insert_run` is the one statement that creates a row).
- `deliverable_view`: `run_deliverables` and `run_artifacts`, projected from `deliverable.*`
  events in the archive's transaction.
- `tenants`: `tenants` and `api_keys` (a key is stored only as its sha256).

It knows nothing of HTTP (an import-linter contract keeps it so).
"""
