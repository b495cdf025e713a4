"""What a release prepares before services start: the streams and the database migrations.

Locally (`runloom up`, the tests) every service prepares on start: both steps are idempotent.
In Kubernetes the release Job does it once (`python -m runloom.admin provision|migrate`) and
the services run with RUNLOOM_MIGRATE_ON_START=false: each replica waits until the release is
in place instead of racing to change the schema.
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


async def prepare(js: JetStreamContext, pool: asyncpg.Pool, settings: Settings) -> None:
    """Provision and migrate (RUNLOOM_MIGRATE_ON_START, the default), or wait for the release."""
    if settings.migrate_on_start:
        await bus.provision(js, settings)
        await db.migrate(pool)
        return
    await wait_for_release(js, pool, settings)


async def missing(js: JetStreamContext, pool: asyncpg.Pool, settings: Settings) -> list[str]:
    """What the release has not put in place yet (streams, migrations); a server that does not
    answer now counts as not in place, so a waiting replica rides out restarts."""
    out: list[str] = []
    names = [str(cfg.name) for cfg in bus.stream_configs(settings)]
    names.extend(f"OBJ_{bucket}" for bucket in bus.BUCKETS)
    for name in names:
        try:
            await js.stream_info(name)  # type: ignore[arg-type]
        except NotFoundError:
            out.append(f"stream {name}")
        except (TimeoutError, nats.errors.Error) as exc:  # a node restarting, a leader moving
            out.append(f"stream {name} (no answer: {exc!r})")
    try:
        done = {r["name"] for r in await pool.fetch("SELECT name FROM schema_migrations")}
    except asyncpg.UndefinedTableError:
        done = set()
    except (OSError, asyncpg.PostgresError) as exc:
        return [*out, f"migrations (no answer from PostgreSQL: {exc!r})"]
    out.extend(f"migration {name}" for name, _sql in db.migration_files() if name not in done)
    return out


async def wait_for_release(
    js: JetStreamContext,
    pool: asyncpg.Pool,
    settings: Settings,
    *,
    every_s: float = 2.0,
) -> None:
    """Poll until every stream exists and no migration is pending; say what is missing."""
    said = 0.0
    while todo := await missing(js, pool, settings):
        if time.monotonic() - said > 30:
            log.warning(
                "waiting for the release Job (python -m runloom.admin): missing %s",
                ", ".join(todo),
            )
            said = time.monotonic()
        await asyncio.sleep(every_s)
