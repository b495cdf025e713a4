"""Service processes: start, SIGKILL, restart, stop. Used by `runloom up` and by e2e tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from runloom.devkit.embedded import ChildProcess
from runloom.runtime import roles

SERVICES = ("gateway", "orchestrator", "deliverables", "billing", "webhooks", "lifecycle")
"""Every service process `runloom up` starts (the lifecycle service has no database role)."""


@dataclass
class ServiceProcess(ChildProcess):
    """One replica of a service, as `python -m runloom.<service>`, logging to a file."""

    service: str
    env: dict[str, str]
    log_dir: Path
    replica: str = "1"
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return f"{self.service}-{self.replica}"

    @property
    def log_file(self) -> Path:
        return self.log_dir / f"{self.name}.log"

    def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.env, "RUNLOOM_REPLICA_ID": self.name}
        # The service connects as its own role (runloom.devkit.database), knowing no other's.
        own_url = env.get(roles.URL_VARIABLES.get(self.service, ""))
        for name in roles.URL_VARIABLES.values():
            env.pop(name, None)
        if own_url:
            env["RUNLOOM_DATABASE_URL"] = own_url
        elif self.service not in roles.URL_VARIABLES:  # no tables (lifecycle): no database
            env.pop("RUNLOOM_DATABASE_URL", None)
        log = open(self.log_file, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", f"runloom.{self.service}"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def wait_http(url: str, timeout: float = 30.0, proc: ServiceProcess | None = None) -> None:
    """Wait until `url` answers 200 (e.g. the gateway's /readyz)."""
    import httpx

    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc is not None and proc.proc is not None and proc.proc.poll() is not None:
            raise RuntimeError(f"{proc.name} exited ({proc.proc.returncode}):\n{proc.log_tail()}")
        try:
            r = httpx.get(url, timeout=1.0)
            if r.status_code == 200:
                return
            last = f"{r.status_code} {r.text[:200]}"
        except httpx.HTTPError as exc:
            last = str(exc)
        time.sleep(0.1)
    tail = proc.log_tail() if proc else ""
    raise TimeoutError(f"{url} not ready within {timeout}s ({last})\n{tail}")
