"""Lifecycle: erasure and retention, run by the one workload allowed to purge run histories.

Modules: `service` (the entry: the `lifecycle.erase` responder and the sweeper), `eraser` (runs
erasure jobs, one at a time per job), `retention` (the sweeper: runs past their tenant's policy,
and jobs left unfinished), `access` (its bus identity), `metrics`. It has no table and no
database connection: each service erases its own rows when asked on `erase.<service>`.
"""
