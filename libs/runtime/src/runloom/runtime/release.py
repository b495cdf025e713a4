"""What a release prepares before services start: the streams and the database migrations.

Locally (`runloom up`, the tests) every service prepares on start: both steps are idempotent.
A service migrates only its own schema (`db.migrate(pool, service)`), connected as its own role;
the roles and schemas themselves are the administrator's (`runtime.roles.provision`). In
Kubernetes the release Job does both once (`python -m runloom.admin provision|migrate`) and the
services run with RUNLOOM_MIGRATE_ON_START=false: each replica waits until the release is in
place instead of racing to change the schema.
"""

from __future__ import annotations

import asyncio
import logging
import time

import asyncpg
import nats.errors
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from runloom.runtime import bus, db
from runloom.runtime.config import Settings

log = logging.getLogger(__name__)


async def open_pool(
    settings: Settings, *, max_size: int = 10, every_s: float = 2.0
) -> asyncpg.Pool:
    """The service's pool. Waiting for the release (RUNLOOM_MIGRATE_ON_START=false), a role
    the release Job has not created yet, or whose password it has not set, is waited for too."""
    said = 0.0
    while True:
        try:
            return await db.create_pool(settings.effective_database_url, max_size=max_size)
        except (
            asyncpg.InvalidAuthorizationSpecificationError,
            asyncpg.InvalidPasswordError,
        ) as exc:
            if settings.migrate_on_start:
                raise
            if time.monotonic() - said > 30:
                log.warning("waiting for the release Job (python -m runloom.admin): %s", exc)
                said = time.monotonic()
            await asyncio.sleep(every_s)


async def prepare(
    js: JetStreamContext, pool: asyncpg.Pool, settings: Settings, service: str
) -> None:
    """Migrate the service's schema (RUNLOOM_MIGRATE_ON_START, the default) once the streams
    are there, or wait for the release. Streams are the admin identity's to make (`runloom up`,
    the release Job): a service may not create, change or delete one."""
    if settings.migrate_on_start:
        await wait_for_release(js, pool, settings, ())
        await db.migrate(pool, service)
        return
    await wait_for_release(js, pool, settings, (service,))


async def missing(
    js: JetStreamContext,
    pool: asyncpg.Pool | None,
    settings: Settings,
    services: tuple[str, ...] = db.SERVICES,
) -> list[str]:
    """What the release has not put in place yet (streams, the services' migrations); a server
    that does not answer now counts as not in place, so a waiting replica rides out restarts."""
    out: list[str] = []
    names = [str(cfg.name) for cfg in bus.stream_configs(settings)]
    names.extend(f"OBJ_{bucket}" for bucket in bus.BUCKETS)
    names.extend(f"KV_{bucket}" for bucket in bus.KV_BUCKETS)
    for name in names:
        try:
            await js.stream_info(name)  # type: ignore[arg-type]
        except NotFoundError:
            out.append(f"stream {name}")
        except (TimeoutError, nats.errors.Error) as exc:  # a node restarting, a leader moving
            out.append(f"stream {name} (no answer: {exc!r})")
    for service in services:
        assert pool is not None, "a service's migrations are looked up in its database"
        try:
            done = await db.applied(pool, service)
        except (OSError, asyncpg.PostgresError) as exc:
            return [*out, f"migrations (no answer from PostgreSQL: {exc!r})"]
        out.extend(
            f"migration {service}/{name}"
            for name, _sql in db.migration_files(service)
            if name not in done
        )
    return out


async def wait_for_release(
    js: JetStreamContext,
    pool: asyncpg.Pool | None,
    settings: Settings,
    services: tuple[str, ...] = db.SERVICES,
    *,
    every_s: float = 2.0,
) -> None:
    """Poll until every stream exists and no migration is pending; say what is missing."""
    said = 0.0
    while todo := await missing(js, pool, settings, services):
        if time.monotonic() - said > 30:
            log.warning(
                "waiting for the release Job (python -m runloom.admin): missing %s",
                ", ".join(todo),
            )
            said = time.monotonic()
        await asyncio.sleep(every_s)


async def wait_for_streams(js: JetStreamContext, settings: Settings, every_s: float = 2.0) -> None:
    """`wait_for_release` for a service without tables: the streams and buckets alone."""
    await wait_for_release(js, None, settings, (), every_s=every_s)
