"""`python -m runloom.admin`: what a release runs once, before its services (the Kubernetes Job).

    python -m runloom.admin provision      create or update every stream and the artifact store
    python -m runloom.admin migrate        each service's role and schema, its pending migrations,
                                           the listed cross-service grants (runtime.roles)
    python -m runloom.admin check          exit 1 (and say what) if either is still missing
    python -m runloom.admin tenant ID      create tenant ID (if missing) and print a new API key
    python -m runloom.admin quota show [ID]                 a tenant's quotas (or the platform's)
    python -m runloom.admin quota set ID|--platform N=V...  override quotas (V `default`: drop it)
    python -m runloom.admin tenant delete ID
                                           erase every trace of tenant ID (resumable; reports
                                           what it removed: runtime.erasure)
    python -m runloom.admin tenant retention ID DAYS|keep
                                           keep the tenant's ended runs DAYS days (or forever)
    python -m runloom.admin backup DIR     online backup: stream snapshots, object stores, a
                                           PostgreSQL dump, manifest with sha256 (runtime.backup)
    python -m runloom.admin restore DIR    restore a backup into an empty NATS and database
                                           (streams with RUNLOOM_STREAM_REPLICAS replicas)

Settings come from the same RUNLOOM_* variables as the services (RUNLOOM_NATS_URL,
RUNLOOM_STREAM_REPLICAS, RUNLOOM_DATABASE_URL …). RUNLOOM_DATABASE_URL is the database
administrator's URL here; `migrate` sets each role's password from the service's own URL in
RUNLOOM_DATABASE_URL_<SERVICE> (the Secret `runloom-db-<service>` its Deployment uses; a role
whose variable is unset keeps its password). Each of these may instead name a file holding the
value, as `<VARIABLE>_FILE` (a Secret mounted as a file). Every command is idempotent.
Nothing here imports the development kit: the service image does not carry it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
from runloom.contracts import subjects
from runloom.runtime import backup, bus, db, erasure, release, roles
from runloom.runtime.config import Settings, secret
from runloom.runtime.logging import setup_logging


async def provision(settings: Settings) -> int:
    nc = await bus.connect_as(settings, "runloom-admin")
    try:
        await bus.provision(nc.jetstream(), settings)
    finally:
        await nc.close()
    names = [str(cfg.name) for cfg in bus.stream_configs(settings)]
    print(f"streams ready (replicas {settings.stream_replicas}): {', '.join(names)}")
    return 0


def _admin_url(settings: Settings) -> str:
    return roles.with_search_path(settings.effective_database_url, roles.admin_search_path())


async def migrate(settings: Settings) -> int:
    passwords: dict[str, str | None] = {}
    for service in db.SERVICES:
        url = secret(
            os.environ.get(roles.url_variable(service), ""), roles.URL_FILE_VARIABLES[service]
        )
        passwords[service] = roles.password_of(url, service) if url else None
    conn = await asyncpg.connect(settings.effective_database_url)
    try:
        applied = await roles.provision(conn, passwords)
    finally:
        await conn.close()
    names = [f"{service}/{name}" for service, done in applied.items() for name in done]
    print(f"applied migrations: {', '.join(names)}" if names else "no pending migration")
    return 0


async def check(settings: Settings) -> int:
    nc = await bus.connect_as(settings, "runloom-admin")
    pool = await db.create_pool(_admin_url(settings), max_size=1)
    try:
        todo = await release.missing(nc.jetstream(), pool, settings)
    finally:
        await pool.close()
        await nc.close()
    print("missing: " + ", ".join(todo) if todo else "release in place")
    return 1 if todo else 0


async def tenant(settings: Settings, tenant_id: str, name: str) -> int:
    from runloom.gateway.store.tenants import create_tenant

    pool = await db.create_pool(_admin_url(settings), max_size=1)
    try:
        key = await create_tenant(pool, tenant_id, name or tenant_id)
    finally:
        await pool.close()
    print(key)
    return 0


async def quota(settings: Settings, action: str, tenant_id: str | None, values: list[str]) -> int:
    from runloom.gateway import quotas

    target = tenant_id or quotas.PLATFORM
    try:
        parsed = quotas.parse(values)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if action == "set" and not parsed:
        print(f"error: give at least one NAME=VALUE ({', '.join(quotas.NAMES)})", file=sys.stderr)
        return 2
    pool = await db.create_pool(_admin_url(settings), max_size=1)
    try:
        if action == "set":
            if tenant_id is not None and not await pool.fetchval(
                "SELECT 1 FROM tenants WHERE id=$1", tenant_id
            ):
                print(f"error: no tenant {tenant_id!r}", file=sys.stderr)
                return 2
            await quotas.set_limits(pool, target, parsed)
        effective = await quotas.read_limits(pool, target)
        own = await quotas.overrides(pool, target)
    finally:
        await pool.close()
    who = "platform defaults" if tenant_id is None else f"tenant {tenant_id}"
    print(f"quotas of {who} (* = set here; replicas apply a change within {quotas.CACHE_S:g} s):")
    for name, value in quotas.describe(effective).items():
        print(f"  {name:20} {value:g}{' *' if name in own else ''}")
    return 0


async def take_backup(
    settings: Settings, root: Path, dumped: Path | None, *, dated: bool = False, keep: int = 0
) -> int:
    if dated:
        root = root / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    report = await backup.take(
        settings.effective_nats_url,
        settings.effective_database_url,
        root,
        dumped=dumped,
        credentials=settings.nats_credentials,
        ca=settings.nats_ca,
    )
    point = report.manifest["recovery_point"]
    print(
        f"backup written to {root}: {report.total_bytes} bytes in {report.seconds:.2f} s; "
        f"events up to stream sequence {point['events_last_stream_seq']}, "
        f"database as of {point['database_at']}"
    )
    if dated and keep:
        for old in backup.prune(root.parent, keep):
            print(f"removed the older backup {old}")
    return 0


async def restore(settings: Settings, root: Path) -> int:
    manifest = await backup.restore(
        settings.effective_nats_url,
        settings.effective_database_url,
        root,
        replicas=settings.stream_replicas,
        credentials=settings.nats_credentials,
        ca=settings.nats_ca,
    )
    print(
        f"restored {root} (taken {manifest['created_at']}); now run `migrate` (it sets the "
        "services' passwords), then start the services"
    )
    return 0


SETTLE_TIMEOUT_S = 120.0


async def _cancel_and_wait(js: Any, tenant_id: str, run_ids: list[str]) -> None:
    """Ask each open run to stop, and wait (bounded) until every one has ended."""
    from runloom.contracts.events import TERMINAL_TYPES, CancelRequested
    from runloom.contracts.headers import Header
    from runloom.runtime.eventlog import EventLog, RunClosed

    log = EventLog(js, "admin")
    for run_id in run_ids:
        with contextlib.suppress(RunClosed):
            await log.append(
                run_id, tenant_id, CancelRequested(reason="tenant erased", requested_by="admin")
            )
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    waiting = list(run_ids)
    while waiting:
        last = []
        for run_id in waiting:
            msg = await js.get_last_msg(subjects.RUN_EVENTS_STREAM, subjects.run_events(run_id))
            if (msg.headers or {}).get(Header.EVENT_TYPE) not in TERMINAL_TYPES:
                last.append(run_id)
        waiting = last
        if waiting and time.monotonic() > deadline:
            raise erasure.ErasureError(
                f"runs {', '.join(waiting)} did not end within {SETTLE_TIMEOUT_S:.0f} s of being "
                "cancelled; is the orchestrator running? Run the deletion again (it resumes)"
            )
        if waiting:
            await asyncio.sleep(0.5)


async def tenant_delete(settings: Settings, tenant_id: str) -> int:
    nc = await bus.connect_as(settings, "runloom-admin")
    try:
        js = nc.jetstream()
        job = await erasure.Erasure.open(nc, js, tenant_id)
        resumed = f" (resumed after {', '.join(job.job.done)})" if job.job.done else ""
        done = await job.run(settle=lambda runs: _cancel_and_wait(js, tenant_id, runs))
    finally:
        await nc.close()
    print(f"tenant {tenant_id} erased{resumed}: {done.runs} run(s); removed:")
    for key, n in sorted(done.removed.items()):
        print(f"  {key:<45} {n}")
    return 0


async def tenant_retention(settings: Settings, tenant_id: str, days: str) -> int:
    keep = None if days == "keep" else int(days)
    if keep is not None and keep < 1:
        raise ValueError("DAYS must be 1 or more (or `keep`)")
    from runloom.gateway.store.erasure import set_retention

    pool = await db.create_pool(_admin_url(settings), max_size=1)
    try:
        found = await set_retention(pool, tenant_id, keep)
    finally:
        await pool.close()
    if not found:
        print(f"error: no tenant {tenant_id!r}", file=sys.stderr)
        return 1
    print(
        f"tenant {tenant_id}: " + ("every run kept" if keep is None else f"runs kept {keep} days")
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m runloom.admin", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("provision", help="create or update every stream and the artifact store")
    sub.add_parser(
        "migrate", help="make each service's role and schema, apply its pending migrations"
    )
    sub.add_parser("check", help="exit 1 if a stream or a migration is missing")
    t = sub.add_parser(
        "tenant",
        help="tenant ID: create (if missing) and print a new API key; tenant delete ID: erase "
        "it; tenant retention ID DAYS|keep: its retention policy",
    )
    t.add_argument("words", nargs="+", metavar="ID | delete ID | retention ID DAYS")
    t.add_argument("--name", default="")
    q = sub.add_parser("quota", help="show or set a tenant's quotas (or the platform defaults)")
    q.add_argument("action", choices=["show", "set"])
    q.add_argument("tenant_id", nargs="?", help="the tenant (none: the platform defaults)")
    q.add_argument("--platform", action="store_true", help="the platform defaults")
    q.add_argument("values", nargs="*", metavar="NAME=VALUE")
    b = sub.add_parser("backup", help="online backup of every stream and the database into DIR")
    b.add_argument("dir", type=Path)
    b.add_argument(
        "--postgres-dump",
        type=Path,
        help="a pg_dump --format=custom file made just before, used instead of dumping here",
    )
    b.add_argument(
        "--dated", action="store_true", help="write into DIR/<UTC time> (a scheduled backup)"
    )
    b.add_argument(
        "--keep", type=int, default=0, help="with --dated: keep only the newest N complete backups"
    )
    r = sub.add_parser("restore", help="restore a backup into an empty NATS and database")
    r.add_argument("dir", type=Path)
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    setup_logging("admin", settings.log_level, settings.log_format)
    logging.getLogger("runloom").info("admin %s", args.command)
    if args.command == "provision":
        return asyncio.run(provision(settings))
    if args.command == "migrate":
        return asyncio.run(migrate(settings))
    if args.command == "check":
        return asyncio.run(check(settings))
    if args.command == "quota":
        tenant_id, values = args.tenant_id, list(args.values)
        if tenant_id is not None and "=" in tenant_id:  # `set --platform N=V`: no tenant id
            values.insert(0, tenant_id)
            tenant_id = None
        if tenant_id is None and not args.platform and args.action == "set":
            parser.error("quota set: name a tenant, or --platform for the defaults")
        return asyncio.run(quota(settings, args.action, tenant_id, values))
    try:
        if args.command == "backup":
            return asyncio.run(
                take_backup(
                    settings, args.dir, args.postgres_dump, dated=args.dated, keep=args.keep
                )
            )
        if args.command == "restore":
            return asyncio.run(restore(settings, args.dir))
        words = args.words
        if words[0] == "delete" and len(words) == 2:
            return asyncio.run(tenant_delete(settings, words[1]))
        if words[0] == "retention" and len(words) == 3:
            return asyncio.run(tenant_retention(settings, words[1], words[2]))
        if len(words) != 1:
            parser.error("tenant takes ID, or delete ID, or retention ID DAYS|keep")
    except (backup.BackupError, erasure.ErasureError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return asyncio.run(tenant(settings, args.words[0], args.name))


if __name__ == "__main__":
    sys.exit(main())
