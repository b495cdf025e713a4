"""Port picking that nothing else races for, and the removal of orphaned PostgreSQL folders."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from runloom.devkit.embedded import (
    bindable,
    ephemeral_range,
    free_ports,
    release_port,
    remove_stale_system_dirs,
)


def test_blocks_lie_outside_the_ephemeral_range_and_are_reserved_across_processes() -> None:
    eph = ephemeral_range()
    blocks = [free_ports(23) for _ in range(5)]
    ports = [p for base in blocks for p in range(base, base + 23)]
    assert len(set(ports)) == len(ports), "a port was handed out twice"
    assert not [p for p in ports if p in eph], f"ports in the ephemeral range {eph}"
    assert all(bindable(p) for p in ports)

    # Another process (another pytest session, a `runloom up`) cannot take one of them.
    probe = (
        "import sys; from runloom.devkit.embedded import reserve_port; "
        "print([reserve_port(int(p)) for p in sys.argv[1:]])"
    )
    mine, released = blocks[0], blocks[1]
    for port in range(released, released + 23):
        release_port(port)
    done = subprocess.run(
        [sys.executable, "-c", probe, str(mine), str(mine + 22), str(released)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.stdout.strip() == "[False, False, True]", done.stdout + done.stderr


def test_a_listening_port_is_not_bindable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", free_ports(1)))
        s.listen()
        assert not bindable(s.getsockname()[1])


def _folder(base: Path, name: str, origin: Path | None, postmaster: int | None = None) -> Path:
    folder = base / name
    (folder / "pgdata").mkdir(parents=True)
    if origin is not None:
        (folder / "origin").write_text(f"{origin}\n")
    if postmaster is not None:
        (folder / "pgdata" / "postmaster.pid").write_text(f"{postmaster}\n/data\n")
    return folder


def test_orphaned_postgres_folders_are_removed_and_nothing_else(tmp_path: Path) -> None:
    base = tmp_path / "var-lib-runloom"
    live_origin = tmp_path / "home" / "postgres"
    live_origin.mkdir(parents=True)
    gone = tmp_path / "deleted-clone" / "postgres"
    # A "postmaster" still running on a folder whose origin is gone (its command line names
    # postgres, as a real postmaster's does).
    server = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "postgres"],
        stdin=subprocess.DEVNULL,
    )
    try:
        orphan = _folder(base, "0123abcd", gone)
        crashed = _folder(base, "4567ef01", gone, postmaster=2**22 + 7)  # no such process
        kept = _folder(base, "89ab2345", live_origin)
        running = _folder(base, "cdef6789", gone, postmaster=server.pid)
        unknown = _folder(base, "fedc0000", None)
        binaries = _folder(base, "pginstall-16.4.0", gone)

        removed = remove_stale_system_dirs(base)

        assert sorted(removed) == sorted([orphan, crashed])
        assert not orphan.exists() and not crashed.exists()
        for folder in (kept, running, unknown, binaries):
            assert folder.exists(), folder
        assert remove_stale_system_dirs(tmp_path / "missing") == []
    finally:
        server.kill()
        server.wait()
    assert os.path.isdir(base)
