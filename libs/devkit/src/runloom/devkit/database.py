"""Local databases as production has them: one schema and one role per service.

The superuser of a local PostgreSQL (embedded, or the one RUNLOOM_DATABASE_URL names for
`runloom up`) provisions the roles and schemas (`runloom.runtime.roles.provision`); each service
process then connects with its own role's URL, handed over as RUNLOOM_DATABASE_URL_<SERVICE>
(`ServiceProcess` turns it into the process's RUNLOOM_DATABASE_URL). Passwords are generated:
once per home for `runloom up` (kept in `<home>/database-roles.json`, mode 600), once per test
session for the fixtures.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import asyncpg
from runloom.runtime import db, roles


def new_passwords() -> dict[str, str]:
    return {service: secrets.token_urlsafe(18) for service in db.SERVICES}


def home_passwords(home: Path) -> dict[str, str]:
    """The home's role passwords, generated and stored on first use."""
    path = home / "database-roles.json"
    if path.exists():
        known = json.loads(path.read_text())
        if set(known) >= set(db.SERVICES):
            return {s: str(known[s]) for s in db.SERVICES}
    passwords = new_passwords()
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(json.dumps(passwords, indent=2) + "\n")
    return passwords


def admin_url(url: str) -> str:
    """The administrator's URL whose unqualified names see every service's tables."""
    return roles.with_search_path(url, roles.admin_search_path())


def service_env(url: str, passwords: dict[str, str]) -> dict[str, str]:
    """RUNLOOM_DATABASE_URL_<SERVICE> for each service, from the administrator's URL."""
    return {roles.url_variable(s): roles.service_url(url, s, passwords[s]) for s in db.SERVICES}


async def provision(url: str, passwords: dict[str, str]) -> dict[str, list[str]]:
    """Create the database if missing, then roles, schemas, migrations and crossings."""
    await db.ensure_database(url)
    conn = await asyncpg.connect(url)
    try:
        return await roles.provision(conn, passwords)
    finally:
        await conn.close()


HEAVY_USER: dict[str, float | int | None] = {
    "requests_per_second": 10_000.0,
    "burst": 10_000.0,
    "sse_streams": 1_000_000,
}
"""Request-rate and stream quotas for a tenant that tests or benchmarks drive as hard as they
can (hundreds of SSE clients of one run, runs posted in a burst): what they measure is the
platform, not the tenant's quota. Concurrent and queued runs keep the platform defaults."""


async def create_heavy_tenant(pool: asyncpg.Pool, tenant_id: str, name: str) -> str:
    """Create a tenant with `HEAVY_USER` quotas; returns its API key."""
    from runloom.gateway import quotas
    from runloom.gateway.store.tenants import create_tenant

    key = await create_tenant(pool, tenant_id, name)
    await quotas.set_limits(pool, tenant_id, HEAVY_USER)
    return key
