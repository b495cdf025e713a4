"""The pytest plugin's servers, run as a separate pytest session in a private (mode 700) folder."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from runloom.devkit.testing import orphaned_postgres_folder

INI = """[pytest]
addopts = -p runloom.devkit.testing -p no:cacheprovider
asyncio_mode = auto
asyncio_default_fixture_loop_scope = session
asyncio_default_test_loop_scope = session
timeout = 60
"""

USES_POSTGRES = """
async def test_postgres_answers(pool):
    assert await pool.fetchval("SELECT 41 + 1") == 42
"""

POSTGRES_FAILS = """
from pathlib import Path

from runloom.devkit import embedded

_nats_start = embedded.NatsServer.start


def _nats_started(self, timeout=15.0):
    _nats_start(self, timeout)
    (Path(__file__).parent / "nats.pid").write_text(str(self.proc.pid))


def _fail(self, timeout=30.0):
    raise embedded.ServerError("PostgreSQL made to fail by the test")


embedded.NatsServer.start = _nats_started
embedded.PostgresServer.start = _fail
"""


def modes(top: Path) -> dict[str, tuple[int, int, int]]:
    """Mode and owner of `top`, every folder above it, and every folder below it."""
    found = {}
    for path in [top, *top.parents, *(p for p in top.rglob("*") if p.is_dir())]:
        st = path.stat()
        found[str(path)] = (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
    return found


@pytest.fixture
def private() -> Iterator[Path]:
    """A mode-700 folder inside a fresh temporary folder, like a clone under /root."""
    outer = Path(tempfile.mkdtemp(prefix="runloom-private-"))
    inner = outer / "clone"
    inner.mkdir(mode=0o700)
    inner.chmod(0o700)
    (inner / "pytest.ini").write_text(INI)
    yield inner
    subprocess.run(["rm", "-rf", str(outer)], check=False)


def _pytest(folder: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RUNLOOM_TEST_TMP": str(folder)}
    env.pop("PYTEST_ADDOPTS", None)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", str(folder)],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )


def _survivors(folder: Path) -> list[str]:
    alive = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if str(folder) in cmdline:
            alive.append(f"{proc.pid}: {cmdline}")
    return alive


def test_postgres_fixture_works_from_a_private_folder_and_changes_no_folder(
    private: Path,
) -> None:
    (private / "test_uses_postgres.py").write_text(USES_POSTGRES)
    before = modes(private)
    stale = orphaned_postgres_folder(f"orphan-{private.parent.name}", private.parent / "gone")

    done = _pytest(private)

    assert done.returncode == 0, done.stdout + done.stderr
    assert stale is None or not stale.exists(), "the session left an orphaned folder in place"
    assert "1 passed" in done.stdout
    after = modes(private)
    assert {p: m for p, m in after.items() if p in before} == before
    assert stat.S_IMODE(private.stat().st_mode) == 0o700
    assert not _survivors(private)


def test_a_failed_postgres_fixture_leaves_no_server_running(private: Path) -> None:
    (private / "conftest.py").write_text(POSTGRES_FAILS)
    (private / "test_uses_postgres.py").write_text(USES_POSTGRES)

    done = _pytest(private)

    assert done.returncode != 0
    assert "PostgreSQL made to fail by the test" in done.stdout, done.stdout
    nats_pid = int((private / "nats.pid").read_text())
    assert not psutil.pid_exists(nats_pid) or psutil.Process(nats_pid).status() == "zombie"
    assert not _survivors(private), "nats-server outlived the pytest session that started it"
