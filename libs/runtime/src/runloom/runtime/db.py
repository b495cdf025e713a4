"""Postgres through asyncpg: pool creation and versioned migrations into a service's schema.

Each service owns one PostgreSQL schema named after it (`gateway`, `orchestrator`,
`deliverables`, `billing`, `webhooks`) and keeps its migrations beside its code, as
`NNNN_name.sql` files in `runloom/<service>/migrations/`. `migrate(pool, service)` applies
that folder's pending files in order, each once, into the schema (unqualified names land
there), as the schema's owner, under an advisory lock per schema so any number of replicas may
start together; what was applied is recorded in `<schema>.schema_migrations`. Roles, schemas
and grants: `runloom.runtime.roles`.
Number ranges by owner: 0001-0199 gateway, 0200-0299 orchestrator (the corpus too),
0300-0399 deliverables, 0400-0499 billing, 0500-0599 webhooks.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

log = logging.getLogger(__name__)

MIGRATION_LOCK = 0x52554E4C  # "RUNL"


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    await conn.set_type_codec("json", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def create_pool(url: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        url, min_size=min_size, max_size=max_size, init=_init_connection, command_timeout=30
    )
    assert pool is not None
    return pool


SERVICES = ("gateway", "orchestrator", "deliverables", "billing", "webhooks")
"""The services that own a schema (named after the service) and a role (`runloom_<service>`)."""


class MigrationError(RuntimeError):
    """The schema to migrate is not in place (provision it first) or a migration failed."""


def migrations_folder(service: str) -> Path:
    """`runloom/<service>/migrations/`, found without importing the service's package."""
    spec = importlib.util.find_spec(f"runloom.{service}")
    if spec is None or not spec.submodule_search_locations:
        raise MigrationError(f"package runloom.{service} is not installed: no migrations")
    return Path(next(iter(spec.submodule_search_locations))) / "migrations"


def migration_files(service: str) -> list[tuple[str, str]]:
    """(name, SQL) of every migration of `service`, in the order they apply."""
    folder = migrations_folder(service)
    files = sorted(folder.glob("*.sql")) if folder.is_dir() else []
    return [(f.name, f.read_text(encoding="utf-8")) for f in files]


async def applied(conn: asyncpg.Connection | asyncpg.Pool, service: str) -> set[str]:
    """The migrations recorded in the service's schema (empty when none ran yet)."""
    try:
        rows = await conn.fetch(f"SELECT name FROM {quote_ident(service)}.schema_migrations")
    except (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError):
        return set()
    return {r["name"] for r in rows}


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def _in_schema(conn: asyncpg.Connection, schema: str) -> None:
    """Inside a transaction: unqualified names resolve to (and are created in) `schema`, and
    whatever is created belongs to the schema's owner (a superuser provisioning acts as it)."""
    owner = await conn.fetchval(
        "SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = $1", schema
    )
    if owner is None:
        raise MigrationError(
            f"schema {schema!r} does not exist: the database is not provisioned for it "
            "(python -m runloom.admin migrate, as the database administrator)"
        )
    # `public` stays on the path for extension types (pgvector's `vector`), never for writing.
    await conn.execute(f"SET LOCAL search_path TO {quote_ident(schema)}, public")
    if owner != await conn.fetchval("SELECT current_user::text"):
        await conn.execute(f"SET LOCAL ROLE {owner}")  # regrole text is already quoted


async def migrate(pool: asyncpg.Pool | asyncpg.Connection, service: str) -> list[str]:
    """Apply the service's pending migrations into its schema; returns the names applied now."""
    if isinstance(pool, asyncpg.Connection):
        return await _migrate(pool, service)
    async with pool.acquire() as conn:
        return await _migrate(conn, service)


async def _migrate(conn: asyncpg.Connection, service: str) -> list[str]:
    applied_now: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1, hashtext($2))", MIGRATION_LOCK, service)
    try:
        async with conn.transaction():
            await _in_schema(conn, service)
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")}
        for name, sql in migration_files(service):
            if name in done:
                continue
            async with conn.transaction():
                await _in_schema(conn, service)
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations(name) VALUES ($1)", name)
            applied_now.append(name)
            log.info("applied migration %s/%s", service, name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1, hashtext($2))", MIGRATION_LOCK, service)
    return applied_now


async def ensure_database(url: str) -> None:
    """Create the database named in `url` if the server lacks it (local embedded mode)."""
    parts = urlsplit(url)
    database = parts.path.lstrip("/") or "postgres"
    try:
        conn = await asyncpg.connect(url)
        await conn.close()
        return
    except asyncpg.InvalidCatalogNameError:
        pass
    admin = await asyncpg.connect(urlunsplit(parts._replace(path="/postgres")))
    try:
        await admin.execute(f'CREATE DATABASE "{database}"')
    except asyncpg.DuplicateDatabaseError:
        pass
    finally:
        await admin.close()
