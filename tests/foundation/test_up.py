"""`runloom up` as a user runs it: a real subprocess on its own data folder and free ports."""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil
import pytest
from runloom.devkit import busauth, database
from runloom.devkit.embedded import (
    free_port,
    free_ports,
    port_open,
    wheel_pginstall,
)
from runloom.devkit.testing import orphaned_postgres_folder
from runloom.gateway.store.tenants import hash_key

SERVICES = (
    "gateway-1",
    "orchestrator-1",
    "deliverables-1",
    "billing-1",
    "webhooks-1",
    "lifecycle-1",
)
IDENTITIES = ("gateway", "orchestrator", "deliverables", "billing", "webhooks", "lifecycle")


@dataclass
class Ports:
    nats: int
    postgres: int
    gateway: int


class UpProcess:
    """One `runloom up` child process, its output captured in a file."""

    def __init__(
        self,
        home: Path,
        ports: Ports,
        index: int,
        extra: dict[str, str] | None = None,
        args: list[str] | None = None,
    ) -> None:
        self.home = home
        self.ports = ports
        self.out = home.parent / f"up-{index}.out"
        self.env = {
            **os.environ,
            "RUNLOOM_HOME": str(home),
            "RUNLOOM_NATS_PORT": str(ports.nats),
            "RUNLOOM_POSTGRES_PORT": str(ports.postgres),
            "RUNLOOM_GATEWAY_PORT": str(ports.gateway),
            # The management ports (six, twelve with --cluster) follow this one (not the
            # default 19090: tests may run side by side).
            "RUNLOOM_MANAGEMENT_PORT": str(free_ports(2 * len(SERVICES))),
        }
        for external in ("RUNLOOM_NATS_URL", "RUNLOOM_DATABASE_URL"):
            self.env.pop(external, None)
        self.env.update(extra or {})
        with open(self.out, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "runloom.cli.main", "up", *(args or [])],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports.gateway}"

    def output(self) -> str:
        return self.out.read_text(errors="replace")

    def readyz(self) -> int:
        try:
            return httpx.get(f"{self.url}/readyz", timeout=1.0).status_code
        except httpx.HTTPError:
            return 0

    def wait_ready(self, timeout: float = 50.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"runloom up exited:\n{self.output()}"
            if "Runloom is up." in self.output() and self.readyz() == 200:
                return
            time.sleep(0.1)
        raise AssertionError(f"runloom up not ready in {timeout}s:\n{self.output()}")

    def interrupt(self, timeout: float = 30.0) -> int:
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill_all()
            raise AssertionError(f"runloom up did not stop on SIGINT:\n{self.output()}") from None

    def kill_all(self) -> None:
        """Last resort for a failed test: leave no process behind."""
        if self.proc.poll() is not None:
            return
        for child in psutil.Process(self.proc.pid).children(recursive=True):
            child.kill()
        self.proc.kill()
        self.proc.wait()


@pytest.fixture(scope="module")
def home() -> Iterator[Path]:
    """A data folder inside a folder only its owner may enter (mkdtemp makes it mode 700)."""
    root = Path(tempfile.mkdtemp(prefix="runloom-up-", dir=os.environ.get("RUNLOOM_TEST_TMP")))
    yield root / "home"
    system_dir = root / "home" / "postgres" / "system-dir"
    if system_dir.exists():
        shutil.rmtree(system_dir.read_text().strip(), ignore_errors=True)
    shutil.rmtree(root, ignore_errors=True)


def _modes(*tops: Path) -> dict[Path, tuple[int, int, int]]:
    """Mode and owner of each folder in `tops` and of every folder above them."""
    found = {}
    for top in tops:
        for path in (top, *top.parents):
            st = path.stat()
            found[path] = (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
    return found


@pytest.fixture(scope="module")
def ports() -> Ports:
    return Ports(nats=free_port(), postgres=free_port(), gateway=free_port())


@pytest.fixture
def start_up(home: Path, ports: Ports) -> Iterator[type[UpProcess]]:
    started: list[UpProcess] = []

    class Started(UpProcess):
        def __init__(self) -> None:  # type: ignore[override]
            super().__init__(home, ports, len(started) + int(time.time() * 1000))
            started.append(self)

    yield Started  # type: ignore[misc]
    for up in started:
        up.kill_all()


def _key_owner(database_url: str, key: str) -> str | None:
    async def query() -> str | None:
        conn = await asyncpg.connect(database.admin_url(database_url))
        try:
            owner: str | None = await conn.fetchval(
                "SELECT tenant_id FROM api_keys WHERE key_hash=$1 AND revoked_at IS NULL",
                hash_key(key),
            )
            return owner
        finally:
            await conn.close()

    return asyncio.run(query())


def _cmdline(proc: psutil.Process) -> list[str]:
    """A descendant's command line; one that has just exited (a PostgreSQL backend whose client
    left, a finished helper) and is not reaped yet has none."""
    try:
        return proc.cmdline()
    except (psutil.ZombieProcess, psutil.NoSuchProcess):
        return []


def test_up_starts_everything_stops_cleanly_and_keeps_data(
    start_up: type[UpProcess], home: Path, ports: Ports
) -> None:
    private = home.parent
    assert stat.S_IMODE(private.stat().st_mode) == 0o700
    before = _modes(private, wheel_pginstall() / "bin")
    stale = orphaned_postgres_folder(f"orphan-{private.name}", private / "deleted")
    up = start_up()
    up.wait_ready()

    out = up.output()
    if stale is not None:  # as root, PostgreSQL's folders live under /var/lib/runloom
        assert not stale.exists(), out
        assert f"removed {stale}: PostgreSQL data of a data folder that no longer exists" in out
    database_url = f"postgresql://postgres@127.0.0.1:{ports.postgres}/runloom"
    assert f"Gateway   {up.url}" in out
    assert f"nats://127.0.0.1:{ports.nats} (embedded, sync_interval always)" in out
    assert "sync_interval: always" in (home / "nats" / "nats-server.conf").read_text()
    assert database_url in out
    key = (home / "api-key").read_text().strip()
    assert key.startswith("rlk_")
    assert f"API key   {key}" in out
    assert _key_owner(database_url, key) == "dev"
    for service in SERVICES:
        assert str(home / "logs" / f"{service}.log") in out
        assert (home / "logs" / f"{service}.log").exists()

    children = psutil.Process(up.proc.pid).children(recursive=True)
    cmdlines = [" ".join(_cmdline(c)) for c in children]
    assert any("nats-server" in c for c in cmdlines), cmdlines
    assert any("postgres" in c for c in cmdlines), cmdlines
    for service in IDENTITIES:
        assert any(f"runloom.{service}" in c for c in cmdlines), (service, cmdlines)
    # One NATS identity per service: its seed a file of mode 600, the process given that path
    # alone, no seed in an environment, a command line, the server's config or a log.
    seeds = {}
    for identity in ("admin", *IDENTITIES):
        path = busauth.credential(home, identity)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        seeds[identity] = path.read_text().strip()
    conf = (home / "nats" / "nats-server.conf").read_text()
    assert "authorization {" in conf and "no_auth_user" not in conf
    for child in children:
        line = " ".join(_cmdline(child))
        service = next((s for s in IDENTITIES if f"runloom.{s}" in line), None)
        if service is None:
            continue
        env = child.environ()
        assert env["RUNLOOM_NATS_CREDENTIALS"] == str(busauth.credential(home, service))
        assert not any(seed in v for v in env.values() for seed in seeds.values())
        if service == "lifecycle":  # no table: no database URL of any role
            assert not [k for k in env if k.startswith("RUNLOOM_DATABASE_URL")], env.keys()
    written = out + conf + "".join(f.read_text() for f in (home / "logs").glob("*.log"))
    assert not any(seed in written for seed in seeds.values())
    assert "webhooks: http:// URLs and loopback targets allowed (local development" in out

    assert up.interrupt() == 0
    _gone, alive = psutil.wait_procs(children, timeout=5)
    assert not alive, [(p.pid, _cmdline(p)) for p in alive if p.is_running()]
    for port in (ports.nats, ports.postgres, ports.gateway):
        assert not port_open(port), f"port {port} still open after runloom up stopped"
    assert not (home / "up.pid").exists()
    assert _modes(private, wheel_pginstall() / "bin") == before, "a folder's mode changed"
    if os.geteuid() == 0:
        pg_home = Path((home / "postgres" / "system-dir").read_text().strip())
        assert f"PG data   {pg_home / 'pgdata'}" in out
        assert str(pg_home / "postgres.log") in out
        st = pg_home.stat()
        assert stat.S_IMODE(st.st_mode) == 0o700
        assert pwd.getpwuid(st.st_uid).pw_name == "runloom-pg"

    again = start_up()
    again.wait_ready()
    assert (home / "api-key").read_text().strip() == key
    assert f"API key   {key}" in again.output()
    assert "created the local tenant" not in again.output()
    assert again.interrupt() == 0
    for identity, seed in seeds.items():  # identities are made once, kept after
        assert busauth.credential(home, identity).read_text().strip() == seed


def test_readyz_fails_when_nats_dies_and_dead_processes_come_back(
    start_up: type[UpProcess], home: Path
) -> None:
    up = start_up()
    up.wait_ready()
    nats_pid = int((home / "run" / "nats-server.pid").read_text())
    assert "nats-server" in " ".join(psutil.Process(nats_pid).cmdline())

    os.kill(nats_pid, signal.SIGKILL)
    killed = time.monotonic()
    while up.readyz() == 200:
        assert time.monotonic() - killed < 5, "/readyz still 200 five seconds after nats died"
        time.sleep(0.05)
    while up.readyz() != 200:
        assert time.monotonic() - killed < 30, f"/readyz did not recover:\n{up.output()}"
        time.sleep(0.1)

    assert "nats-server exited (code -9); restarting" in up.output()
    new_pid = int((home / "run" / "nats-server.pid").read_text())
    assert new_pid != nats_pid

    # Another program takes the orchestrator's management port while it is down: the
    # supervisor moves it to a free port rather than restarting it forever on a taken one.
    orchestrator_pid = int((home / "run" / "orchestrator-1.pid").read_text())
    management = int(up.env["RUNLOOM_MANAGEMENT_PORT"]) + 1
    os.kill(orchestrator_pid, signal.SIGKILL)
    psutil.Process(orchestrator_pid).wait(5)
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", management))
        squatter.listen()
        deadline = time.monotonic() + 15
        while "orchestrator-1 restarted" not in up.output():
            assert time.monotonic() < deadline, f"orchestrator-1 not restarted:\n{up.output()}"
            time.sleep(0.1)
        out = up.output()
        assert "orchestrator-1 exited (code -9); restarting in 1s" in out
        moved = f"orchestrator-1: management port {management} is taken by another program; "
        assert moved in out, out
        url = out.split(moved + "it now uses ", 1)[1].split()[0].replace("/metrics", "/readyz")
        while not _answers(url):
            assert time.monotonic() < deadline + 30, f"{url} not ready:\n{up.output()}"
            time.sleep(0.2)
    restarted = int((home / "run" / "orchestrator-1.pid").read_text())
    assert restarted != orchestrator_pid
    assert "runloom.orchestrator" in " ".join(psutil.Process(restarted).cmdline())
    assert "orchestrator-1 exited" not in up.output().split(moved, 1)[1]
    assert up.interrupt() == 0


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def test_port_in_use_is_named_with_the_variable_to_change(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        ports = Ports(nats=taken.getsockname()[1], postgres=free_port(), gateway=free_port())
        up = UpProcess(tmp_path / "home", ports, 0)
        code = up.proc.wait(30)
    assert code == 1
    out = up.output()
    assert f"port {ports.nats} (NATS) is already in use" in out
    assert "RUNLOOM_NATS_PORT" in out


def test_a_killed_up_leaves_nothing_that_blocks_the_next_start(
    start_up: type[UpProcess], home: Path
) -> None:
    first = start_up()
    first.wait_ready()
    orphans = psutil.Process(first.proc.pid).children(recursive=True)
    first.proc.kill()
    first.proc.wait()
    assert any(p.is_running() for p in orphans), "children outlive a SIGKILLed runloom up"

    second = start_up()
    second.wait_ready()
    _gone, alive = psutil.wait_procs(orphans, timeout=5)
    assert not alive, [p.pid for p in alive]
    assert "left over from an earlier run" in second.output()
    assert second.interrupt() == 0


def test_external_servers_are_used_and_none_is_started(
    servers: Any, settings: Any, tmp_path: Path
) -> None:
    ports = Ports(nats=free_port(), postgres=free_port(), gateway=free_port())
    # The external server knows these identities (it includes their authorization.conf), as
    # an operator sets it up: `runloom up` finds the seeds in its home and uses them.
    shutil.copytree(busauth.secrets_dir(settings.home), busauth.secrets_dir(tmp_path / "home"))
    up = UpProcess(
        tmp_path / "home",
        ports,
        0,
        extra={"RUNLOOM_NATS_URL": servers.nats_url, "RUNLOOM_DATABASE_URL": servers.database_url},
    )
    try:
        up.wait_ready()
        out = up.output()
        assert f"{servers.nats_url} (external)" in out
        assert f"{servers.database_url} (external)" in out
        cmdlines = [" ".join(_cmdline(c)) for c in psutil.Process(up.proc.pid).children(True)]
        assert not any("nats-server" in c or "pgdata" in c for c in cmdlines), cmdlines
        key = (tmp_path / "home" / "api-key").read_text().strip()
        assert _key_owner(servers.database_url, key) == "dev"
        assert up.interrupt() == 0
    finally:
        up.kill_all()


def test_up_cluster_runs_three_nodes_r3_streams_and_two_replicas(
    servers: Any, tmp_path: Path
) -> None:
    # The session's PostgreSQL (embedded PostgreSQL is the single-node tests' business): the
    # cluster's own parts are the three nodes, R3 streams and the replicas.
    base = free_ports(23)  # clients on base..+2, routes on +10..+12, monitors on +20..+22
    gateway = free_ports(2)
    ports = Ports(nats=base, postgres=free_port(), gateway=gateway)
    up = UpProcess(
        tmp_path / "home",
        ports,
        0,
        args=["--cluster"],
        extra={"RUNLOOM_DATABASE_URL": servers.database_url},
    )
    try:
        up.wait_ready(timeout=90)
        out = up.output()
        urls = ",".join(f"nats://127.0.0.1:{base + i}" for i in range(3))
        assert f"{urls} (embedded 3-node cluster, R3 streams, sync_interval always)" in out
        assert f"http://127.0.0.1:{gateway + 1}" in out
        assert httpx.get(f"http://127.0.0.1:{gateway + 1}/readyz", timeout=5).status_code == 200
        jsz = httpx.get(
            f"http://127.0.0.1:{base + 20}/jsz", params={"streams": "true", "config": "true"}
        ).json()
        streams = {
            s["name"]: s["config"]["num_replicas"]
            for account in jsz["account_details"]
            for s in account["stream_detail"]
        }
        assert streams["RUN_EVENTS"] == 3 and set(streams.values()) == {3}, streams
        # What `runloom up` started itself (a gateway's document-parsing fork is not a replica).
        cmdlines = [" ".join(_cmdline(c)) for c in psutil.Process(up.proc.pid).children()]
        assert sum("nats-server" in c for c in cmdlines) == 3, cmdlines
        for service in ("gateway", "orchestrator", "deliverables", "billing"):
            assert sum(f"runloom.{service}" in c for c in cmdlines) == 2, (service, cmdlines)
        assert up.interrupt() == 0
    finally:
        up.kill_all()
        system_dir = tmp_path / "home" / "postgres" / "system-dir"
        if system_dir.exists():
            shutil.rmtree(system_dir.read_text().strip(), ignore_errors=True)
