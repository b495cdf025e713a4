"""`runloom backup DIR` and `runloom restore DIR --home H`: a local home's data, online.

`backup` talks to the servers of a running `runloom up` (RUNLOOM_NATS_URL / RUNLOOM_DATABASE_URL
or the embedded ports, as `up` uses them) and writes the folder `runloom.runtime.backup`
describes, plus the home's API key. `restore` fills an empty home: it starts the home's own
embedded nats-server and PostgreSQL on free loopback ports, restores into them, stops them; the
next `runloom up --home H` starts on the restored data. The mechanics are
`runloom.runtime.backup` (shared with `python -m runloom.admin backup|restore`).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import replace
from pathlib import Path

from runloom.devkit import busauth
from runloom.devkit.embedded import NatsServer, PostgresServer, ServerError, free_port
from runloom.runtime import backup
from runloom.runtime.config import Settings

API_KEY = "api-key"


def _say(message: str) -> None:
    print(f"[runloom] {message}", flush=True)


def _settings(args: argparse.Namespace) -> Settings:
    settings = Settings.from_env()
    if getattr(args, "home", None):
        settings = replace(settings, home=Path(args.home).resolve())
    return settings


def summary(report: backup.Report) -> str:
    point = report.manifest["recovery_point"]
    return (
        f"backup written to {report.root}: {report.total_bytes / 1e6:.2f} MB in "
        f"{report.seconds:.2f} s; events up to stream sequence {point['events_last_stream_seq']}"
        f" ({point['events_taken_at']}), database as of {point['database_at']}"
    )


def run_backup(args: argparse.Namespace) -> int:
    s = _settings(args)
    try:
        report = asyncio.run(
            backup.take(
                s.effective_nats_url,
                s.effective_database_url,
                Path(args.dir).resolve(),
                extras={API_KEY: s.home / API_KEY},
                # RUNLOOM_NATS_CREDENTIALS, else the home's backup identity (snapshots only)
                credentials=s.nats_credentials or str(busauth.credential(s.home, "backup")),
                ca=s.nats_ca,
            )
        )
    except (backup.BackupError, OSError) as exc:
        _say(f"error: {exc}")
        return 1
    _say(summary(report))
    return 0


def home_is_empty(home: Path) -> bool:
    return not home.exists() or not any(home.iterdir())


def restore_home(source: Path, home: Path) -> float:
    """Restore the backup in `source` into the empty `home`; returns the seconds it took."""
    started = time.monotonic()
    if not home_is_empty(home):
        raise backup.BackupError(
            f"{home} is not empty: restore into a new or empty home (runloom restore DIR "
            "--home NEW), then start it with runloom up --home NEW"
        )
    manifest = backup.verify(source)
    home.mkdir(parents=True, exist_ok=True)
    nats = NatsServer(home / "nats", free_port())
    postgres = PostgresServer(home / "postgres", free_port())
    nats.start()
    try:
        postgres.start()
        try:
            asyncio.run(backup.restore(nats.url, postgres.url, source, replicas=1))
        finally:
            postgres.stop()
    finally:
        nats.stop()
    for entry in manifest["files"]:
        if entry["path"] == f"{backup.EXTRA}/{API_KEY}":
            key = home / API_KEY
            key.touch(mode=0o600)
            key.write_bytes((source / entry["path"]).read_bytes())
    return time.monotonic() - started


def run_restore(args: argparse.Namespace) -> int:
    home = _settings(args).home
    was_empty = home_is_empty(home)
    try:
        seconds = restore_home(Path(args.dir).resolve(), home)
    except (backup.BackupError, ServerError, OSError) as exc:
        _say(f"error: {exc}")
        if was_empty and not home_is_empty(home):
            _say(f"{home} holds a partial restore: remove it before trying again")
        return 1
    _say(f"restored {args.dir} into {home} in {seconds:.2f} s; start it: runloom up --home {home}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    b = sub.add_parser(
        "backup",
        help="online backup of a running home (streams, object stores, database) into DIR",
        description="Write a consistent backup of the running platform into DIR (new or "
        "empty): stream snapshots, object stores, a PostgreSQL dump, a manifest with sha256.",
    )
    b.add_argument("dir", help="where the backup goes (a new or empty folder)")
    b.add_argument("--home", help="data folder (default: RUNLOOM_HOME or .runloom)")
    b.set_defaults(func=run_backup)
    r = sub.add_parser(
        "restore",
        help="restore a backup into an empty home (then: runloom up --home H)",
        description="Check the backup's checksums and restore it into an empty home.",
    )
    r.add_argument("dir", help="the backup folder")
    r.add_argument("--home", required=True, help="the new, empty data folder")
    r.set_defaults(func=run_restore)
