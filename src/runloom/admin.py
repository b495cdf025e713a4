"""`python -m runloom.admin`: what a release runs once, before its services (the Kubernetes Job).

    python -m runloom.admin provision      create or update every stream and the artifact store
    python -m runloom.admin migrate        apply pending database migrations
    python -m runloom.admin check          exit 1 (and say what) if either is still missing
    python -m runloom.admin tenant ID      create tenant ID (if missing) and print a new API key

Settings come from the same RUNLOOM_* variables as the services (RUNLOOM_NATS_URL,
RUNLOOM_STREAM_REPLICAS, RUNLOOM_DATABASE_URL …). Every command is idempotent. Nothing here
imports the development kit: the service image does not carry it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from runloom.runtime import bus, db, release
from runloom.runtime.config import Settings
from runloom.runtime.logging import setup_logging


async def provision(settings: Settings) -> int:
    nc = await bus.connect(settings.effective_nats_url, "runloom-admin")
    try:
        await bus.provision(nc.jetstream(), settings)
    finally:
        await nc.close()
    names = [str(cfg.name) for cfg in bus.stream_configs(settings)]
    print(f"streams ready (replicas {settings.stream_replicas}): {', '.join(names)}")
    return 0


async def migrate(settings: Settings) -> int:
    pool = await db.create_pool(settings.effective_database_url, max_size=1)
    try:
        applied = await db.migrate(pool)
    finally:
        await pool.close()
    print(f"applied migrations: {', '.join(applied)}" if applied else "no pending migration")
    return 0


async def check(settings: Settings) -> int:
    nc = await bus.connect(settings.effective_nats_url, "runloom-admin")
    pool = await db.create_pool(settings.effective_database_url, max_size=1)
    try:
        todo = await release.missing(nc.jetstream(), pool, settings)
    finally:
        await pool.close()
        await nc.close()
    print("missing: " + ", ".join(todo) if todo else "release in place")
    return 1 if todo else 0


async def tenant(settings: Settings, tenant_id: str, name: str) -> int:
    from runloom.runtime.tenants import create_tenant

    pool = await db.create_pool(settings.effective_database_url, max_size=1)
    try:
        key = await create_tenant(pool, tenant_id, name or tenant_id)
    finally:
        await pool.close()
    print(key)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m runloom.admin", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("provision", help="create or update every stream and the artifact store")
    sub.add_parser("migrate", help="apply pending database migrations")
    sub.add_parser("check", help="exit 1 if a stream or a migration is missing")
    t = sub.add_parser("tenant", help="create a tenant (if missing) and print a new API key")
    t.add_argument("tenant_id")
    t.add_argument("--name", default="")
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
    return asyncio.run(tenant(settings, args.tenant_id, args.name))


if __name__ == "__main__":
    sys.exit(main())
