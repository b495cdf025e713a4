"""`python -m runloom.admin`: what a release runs once, before its services (the Kubernetes Job).

    python -m runloom.admin provision      create or update every stream and the artifact store
    python -m runloom.admin migrate        each service's role and schema, its pending migrations,
                                           the listed cross-service grants (runtime.roles)
    python -m runloom.admin check          exit 1 (and say what) if either is still missing
    python -m runloom.admin tenant ID      create tenant ID (if missing) and print a new API key

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
import logging
import os
import sys

import asyncpg
from runloom.runtime import bus, db, release, roles
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
    from runloom.runtime.tenants import create_tenant

    pool = await db.create_pool(_admin_url(settings), max_size=1)
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
    sub.add_parser(
        "migrate", help="make each service's role and schema, apply its pending migrations"
    )
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
