"""Least privilege, tried: each service's role works in its own schema and is refused everywhere
else (another service's tables, `public`, another schema, what it does not own), except for the
interim crossings listed in `runtime.roles.CROSSINGS`, and nothing beyond them is granted."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
from runloom.runtime import db, roles

PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")


async def _tables(pool: Any) -> dict[str, list[str]]:
    rows = await pool.fetch(
        "SELECT schemaname, tablename FROM pg_tables WHERE schemaname = ANY($1::text[])"
        " ORDER BY 1, 2",
        list(db.SERVICES),
    )
    out: dict[str, list[str]] = {s: [] for s in db.SERVICES}
    for r in rows:
        out[r["schemaname"]].append(r["tablename"])
    return out


async def _denied(conn: asyncpg.Connection, sql: str) -> None:
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        async with conn.transaction():
            await conn.execute(sql)


async def _allowed(conn: asyncpg.Connection, sql: str) -> None:
    tr = conn.transaction()
    await tr.start()
    try:
        await conn.execute(sql)
    finally:
        await tr.rollback()


def _crossed(service: str, owner: str, table: str) -> set[str]:
    return {
        p
        for c in roles.CROSSINGS
        if (c.service, c.owner, c.table) == (service, owner, table)
        for p in c.privileges
    }


@pytest.mark.parametrize("service", db.SERVICES)
async def test_a_service_role_reaches_its_own_schema_and_nothing_else(
    service: str, pool: Any, service_database_urls: dict[str, str]
) -> None:
    tables = await _tables(pool)
    assert all(tables.values()), f"every service has tables: {tables}"
    conn = await asyncpg.connect(service_database_urls[service])
    try:
        assert await conn.fetchval("SELECT current_user") == roles.role_name(service)
        path = await conn.fetchval("SHOW search_path")
        assert path.split(", ")[0] == service, path

        # Its own: read, write, create, drop.
        own = tables[service][0]
        await _allowed(conn, f"SELECT * FROM {own} LIMIT 1")
        await _allowed(conn, f"DELETE FROM {own}")
        await _allowed(conn, "CREATE TABLE scratch (x int); DROP TABLE scratch")
        assert await conn.fetchval(
            "SELECT count(*) FROM pg_tables WHERE schemaname = $1", service
        ) == len(tables[service])

        # Every other service's table: refused unless listed, and then only what is listed.
        for owner, names in tables.items():
            if owner == service:
                continue
            for table in names:
                name = f"{owner}.{table}"
                granted = _crossed(service, owner, table)
                read = f"SELECT * FROM {name} LIMIT 1"
                write = f"DELETE FROM {name}"
                await (_allowed if "SELECT" in granted else _denied)(conn, read)
                if not {"SELECT", "DELETE"} <= granted:
                    await _denied(conn, write)
                await _denied(conn, f"TRUNCATE {name}")
                await _denied(conn, f"DROP TABLE {name}")
                await _denied(conn, f"ALTER TABLE {name} ADD COLUMN intruder int")
            await _denied(conn, f"CREATE TABLE {owner}.intruder (x int)")
            await _denied(conn, f"DROP SCHEMA {owner} CASCADE")

        # Nothing in public, no temporary tables, no new schema, nothing it does not own.
        await _denied(conn, "CREATE TABLE public.intruder (x int)")
        await _denied(conn, "CREATE TEMPORARY TABLE intruder_temp (x int)")
        await _denied(conn, "CREATE SCHEMA intruder")
        await _denied(conn, "DROP EXTENSION vector")
        await _denied(conn, "DROP SCHEMA public")
        await _denied(conn, f"ALTER ROLE {roles.role_name(service)} SUPERUSER")
    finally:
        await conn.close()


async def test_nothing_beyond_the_listed_crossings_is_granted(pool: Any) -> None:
    tables = await _tables(pool)
    granted = set()
    for service in db.SERVICES:
        role = roles.role_name(service)
        for owner, names in tables.items():
            if owner == service:
                continue
            for table in names:
                for p in PRIVILEGES:
                    if await pool.fetchval(
                        "SELECT has_table_privilege($1, $2, $3)", role, f"{owner}.{table}", p
                    ):
                        granted.add((service, owner, table, p))
            assert not await pool.fetchval(
                "SELECT has_schema_privilege($1, $2, 'CREATE')", role, owner
            )
        assert not await pool.fetchval("SELECT has_schema_privilege($1, 'public', 'CREATE')", role)
        assert not await pool.fetchval(
            "SELECT has_database_privilege($1, current_database(), 'CREATE')", role
        )
        assert not await pool.fetchval(
            "SELECT has_database_privilege($1, current_database(), 'TEMPORARY')", role
        )
    listed = {(c.service, c.owner, c.table, p) for c in roles.CROSSINGS for p in c.privileges}
    assert granted == listed


async def test_the_orchestrator_role_uses_pgvector(service_database_urls: dict[str, str]) -> None:
    conn = await asyncpg.connect(service_database_urls["orchestrator"])
    try:
        distance = await conn.fetchval("SELECT '[1,0,0]'::vector <=> '[0,1,0]'::vector")
        assert distance == pytest.approx(1.0)
        assert await conn.fetchval("SELECT count(*) FROM chunk_embeddings") >= 0
    finally:
        await conn.close()


async def test_provisioning_again_changes_nothing_and_revokes_an_unlisted_grant(
    servers: Any, pool: Any, service_database_urls: dict[str, str]
) -> None:
    await pool.execute("GRANT SELECT ON billing.billing_reservations TO runloom_gateway")
    conn = await asyncpg.connect(servers.database_url)
    try:
        assert await roles.provision(conn, {}) == {s: [] for s in db.SERVICES}
    finally:
        await conn.close()
    assert not await pool.fetchval(
        "SELECT has_table_privilege('runloom_gateway', 'billing.billing_reservations', 'SELECT')"
    )
    gateway = await asyncpg.connect(service_database_urls["gateway"])
    try:
        await _denied(gateway, "SELECT * FROM billing.billing_reservations")
    finally:
        await gateway.close()


async def test_a_listed_crossing_is_granted_and_revoked_once_removed(
    servers: Any, pool: Any, service_database_urls: dict[str, str], monkeypatch: Any
) -> None:
    crossing = roles.Crossing("gateway", "billing", "billing_ledger", ("SELECT",), "a test")
    admin = await asyncpg.connect(servers.database_url)
    try:
        monkeypatch.setattr(roles, "CROSSINGS", (crossing,))
        await roles.provision(admin, {})
        gateway = await asyncpg.connect(service_database_urls["gateway"])
        try:
            assert "billing" in (await gateway.fetchval("SHOW search_path"))
            await _allowed(gateway, "SELECT * FROM billing_ledger LIMIT 1")
            await _denied(gateway, "DELETE FROM billing_ledger")
        finally:
            await gateway.close()
        monkeypatch.setattr(roles, "CROSSINGS", ())
        await roles.provision(admin, {})
    finally:
        monkeypatch.undo()
        await roles.provision(admin, {})
        await admin.close()
    gateway = await asyncpg.connect(service_database_urls["gateway"])
    try:
        assert "billing" not in (await gateway.fetchval("SHOW search_path"))
        await _denied(gateway, "SELECT * FROM billing.billing_ledger LIMIT 1")
    finally:
        await gateway.close()
