"""Database roles and schemas: one schema and one login role per service, least privilege.

`provision(conn, passwords)` runs as the database administrator (a superuser: the release Job
with RUNLOOM_DATABASE_URL = the admin's URL; locally `runloom up` and the test fixtures) and
is idempotent. For every service in `db.SERVICES` it makes

- the login role `runloom_<service>` (password set or changed when one is given), member of
  nothing, and the schema `<service>` owned by it: the role creates, reads and drops what is in
  its own schema and nothing else;
- the role's `search_path` = its schema (then `public`, which holds extension types such as
  pgvector's `vector` and where nobody but the administrator may create anything), so the
  services' SQL keeps unqualified table names;

then applies each service's migrations into its schema as that role (`db.migrate`), and grants
exactly the interim `CROSSINGS` below (revoking any other grant on another service's tables).

`service_url(admin_url, service, password)` is the URL a service connects with.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import asyncpg
from runloom.runtime import db
from runloom.runtime.db import quote_ident

EXTENSIONS = ("vector",)
"""Extensions only a superuser may create (pgvector is not trusted); made in `public`."""


@dataclass(frozen=True)
class Crossing:
    """A service that still reads or writes another service's table, until it stops doing so."""

    service: str
    """The role granted the access (`runloom_<service>`)."""
    owner: str
    """The schema (service) that owns the table."""
    table: str
    privileges: tuple[str, ...]
    why: str


# Interim cross-service access, each entry one table and why. A service that stops touching the
# table deletes its entry here: the grant is then revoked on the next provisioning, the owner's
# schema leaves the role's search_path once no entry names it, and the least-privilege test
# (libs/runtime/tests/test_roles.py) checks that nothing beyond this list is granted.
CROSSINGS: tuple[Crossing, ...] = ()
# None left: every service reaches only its own schema. An entry reads e.g.
# Crossing("gateway", "deliverables", "artifacts", ("SELECT",), "why, until when").


def role_name(service: str) -> str:
    return f"runloom_{service}"


def search_path(service: str) -> list[str]:
    """The role's schemas in order: its own, then owners it still crosses into, then public."""
    crossed = [c.owner for c in CROSSINGS if c.service == service]
    return [service, *dict.fromkeys(crossed), "public"]


def admin_search_path() -> str:
    """Every service's schema, for an administrator's (or a test's) unqualified queries."""
    return ",".join([*db.SERVICES, "public"])


def service_url(admin_url: str, service: str, password: str) -> str:
    """`admin_url` with the service's role and password, without a search_path of the
    administrator's (the role's own applies); other parameters (sslmode …) stay."""
    parts = urlsplit(with_search_path(admin_url, ""))
    host = parts.netloc.rsplit("@", 1)[-1]
    auth = f"{role_name(service)}:{quote(password, safe='')}" if password else role_name(service)
    return urlunsplit(parts._replace(netloc=f"{auth}@{host}"))


def with_search_path(url: str, path: str) -> str:
    """`url` whose connections start with `search_path` = `path` (asyncpg passes unknown
    query parameters as server settings); an empty `path` removes the parameter."""
    parts = urlsplit(url)
    query = [q for q in parts.query.split("&") if q and not q.startswith("search_path=")]
    if path:
        query.append(f"search_path={path}")
    return urlunsplit(parts._replace(query="&".join(query)))


async def provision(
    conn: asyncpg.Connection, passwords: Mapping[str, str | None]
) -> dict[str, list[str]]:
    """Make (or bring up to date) every service's role and schema, apply each service's
    migrations as its role, grant the listed crossings. Returns the migrations applied now."""
    database = await conn.fetchval("SELECT current_database()")
    for ext in EXTENSIONS:
        await conn.execute(f"CREATE EXTENSION IF NOT EXISTS {ext} SCHEMA public")
    await conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    await conn.execute(f"REVOKE TEMPORARY ON DATABASE {quote_ident(database)} FROM PUBLIC")
    for service in db.SERVICES:
        await _role(conn, service, passwords.get(service))
    applied = {service: await db.migrate(conn, service) for service in db.SERVICES}
    await _grant_crossings(conn)
    return applied


async def _role(conn: asyncpg.Connection, service: str, password: str | None) -> None:
    role = quote_ident(role_name(service))
    exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role_name(service))
    if not exists:
        await conn.execute(f"CREATE ROLE {role} LOGIN")
    await conn.execute(
        f"ALTER ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"
    )
    if password:
        await conn.execute(f"ALTER ROLE {role} PASSWORD {_literal(password)}")
    schema = quote_ident(service)
    await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema} AUTHORIZATION {role}")
    await conn.execute(f"ALTER SCHEMA {schema} OWNER TO {role}")
    await conn.execute(f"REVOKE ALL ON SCHEMA {schema} FROM PUBLIC")
    path = ", ".join(quote_ident(s) for s in search_path(service))
    await conn.execute(f"ALTER ROLE {role} SET search_path TO {path}")


async def _grant_crossings(conn: asyncpg.Connection) -> None:
    """Revoke every grant one service's role holds in another's schema, then grant exactly the
    listed crossings (one transaction: a running service never sees a gap)."""
    async with conn.transaction():
        for service in db.SERVICES:
            for owner in db.SERVICES:
                if owner == service:
                    continue
                role, schema = quote_ident(role_name(service)), quote_ident(owner)
                await conn.execute(f"REVOKE ALL ON ALL TABLES IN SCHEMA {schema} FROM {role}")
                await conn.execute(f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA {schema} FROM {role}")
                await conn.execute(f"REVOKE ALL ON SCHEMA {schema} FROM {role}")
        for c in CROSSINGS:
            role, schema = quote_ident(role_name(c.service)), quote_ident(c.owner)
            await conn.execute(f"GRANT USAGE ON SCHEMA {schema} TO {role}")
            await conn.execute(
                f"GRANT {', '.join(c.privileges)} ON {schema}.{quote_ident(c.table)} TO {role}"
            )


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


URL_VARIABLES = {
    "gateway": "RUNLOOM_DATABASE_URL_GATEWAY",
    "orchestrator": "RUNLOOM_DATABASE_URL_ORCHESTRATOR",
    "deliverables": "RUNLOOM_DATABASE_URL_DELIVERABLES",
    "billing": "RUNLOOM_DATABASE_URL_BILLING",
    "webhooks": "RUNLOOM_DATABASE_URL_WEBHOOKS",
}
"""The variables holding each service's own URL where one process knows them all (the release
Job, a local supervisor); a service process itself reads RUNLOOM_DATABASE_URL."""


URL_FILE_VARIABLES = {
    "gateway": "RUNLOOM_DATABASE_URL_GATEWAY_FILE",
    "orchestrator": "RUNLOOM_DATABASE_URL_ORCHESTRATOR_FILE",
    "deliverables": "RUNLOOM_DATABASE_URL_DELIVERABLES_FILE",
    "billing": "RUNLOOM_DATABASE_URL_BILLING_FILE",
    "webhooks": "RUNLOOM_DATABASE_URL_WEBHOOKS_FILE",
}
"""The same URLs as files (a Secret mounted as a file: the release Job in Kubernetes)."""


def url_variable(service: str) -> str:
    return URL_VARIABLES[service]


def password_of(url: str, service: str) -> str | None:
    """The password in a service's URL (None without one); the URL must name the service's role."""
    parts = urlsplit(url)
    if parts.username != role_name(service):
        raise ValueError(
            f"{url_variable(service)} connects as {parts.username!r}; "
            f"the {service} service's role is {role_name(service)!r}"
        )
    return unquote(parts.password) if parts.password else None
