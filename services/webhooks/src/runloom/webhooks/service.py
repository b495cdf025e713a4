"""The webhooks service (one replica): the intake, the dispatcher, the management routes.

Consumes: every run's events (RUN_EVENTS, durable `webhooks`, `intake.Intake.consumer`),
keeping the types an endpoint can subscribe to. Serves (request/reply, queue group
`webhooks`): `webhooks.endpoint.create|list|delete|rotate`, `webhooks.deliveries.list|
redeliver` (`responders.Management`). Sends: HTTPS POSTs to the tenants' endpoints, signed
per Standard Webhooks, through the egress guard. Its tables (schema `webhooks`): endpoints
and deliveries. It imports no other service.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass, field

from runloom.runtime import consumer
from runloom.runtime.config import Settings, env_float
from runloom.runtime.eventlog import EventLog
from runloom.runtime.metrics import consumer_gauges
from runloom.runtime.responder import Responder
from runloom.runtime.retry import Backoff
from runloom.runtime.service import ServiceContext, serve
from runloom.webhooks import metrics
from runloom.webhooks.access import QUEUE
from runloom.webhooks.dispatcher import Dispatcher, DispatchOptions
from runloom.webhooks.egress import EgressPolicy
from runloom.webhooks.intake import Intake
from runloom.webhooks.responders import Management
from runloom.webhooks.sender import Sender
from runloom.webhooks.store import RetryPolicy, Store

log = logging.getLogger(__name__)


def env_flag(name: str, default: bool = False) -> bool:
    """`true`/`1` or `false`/`0` from the environment; anything else fails loudly."""
    raw = os.environ.get(name, "").strip().lower()
    if raw == "":
        return default
    if raw in ("true", "1"):
        return True
    if raw in ("false", "0"):
        return False
    raise ValueError(f"{name}={raw!r} is neither true nor false")


@dataclass(frozen=True, kw_only=True)
class WebhooksOptions:
    """The service's own settings, from `RUNLOOM_WEBHOOKS_*` (`from_env`)."""

    allow_local: bool = False
    """Local development: http URLs and loopback addresses are allowed too."""
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    dispatch: DispatchOptions = field(default_factory=DispatchOptions)
    timeout_s: float = 15.0
    """One attempt's bound: connect, send, and the first bytes of the answer."""
    rotation_grace_s: float = 24 * 3600.0
    """How long a rotated-out secret still signs."""
    keep_s: float = 14 * 86400.0
    """Delivered and failed deliveries are deleted this long after their event arrived."""

    @classmethod
    def from_env(cls) -> WebhooksOptions:
        return cls(
            allow_local=env_flag("RUNLOOM_WEBHOOKS_ALLOW_LOCAL"),
            retry=RetryPolicy(
                backoff=Backoff(
                    first_s=env_float("RUNLOOM_WEBHOOKS_RETRY_FIRST_S", 5.0),
                    max_s=env_float("RUNLOOM_WEBHOOKS_RETRY_MAX_S", 3600.0),
                    jitter=0.5,
                ),
                retry_for_s=env_float("RUNLOOM_WEBHOOKS_RETRY_FOR_S", 26 * 3600.0),
                disable_after_s=env_float("RUNLOOM_WEBHOOKS_DISABLE_AFTER_S", 72 * 3600.0),
            ),
            dispatch=DispatchOptions(
                concurrency=int(env_float("RUNLOOM_WEBHOOKS_CONCURRENCY", 32)),
                poll_s=env_float("RUNLOOM_WEBHOOKS_POLL_S", 0.25),
            ),
            timeout_s=env_float("RUNLOOM_WEBHOOKS_TIMEOUT_S", 15.0),
            rotation_grace_s=env_float("RUNLOOM_WEBHOOKS_ROTATION_GRACE_S", 24 * 3600.0),
            keep_s=env_float("RUNLOOM_WEBHOOKS_KEEP_S", 14 * 86400.0),
        )


def gauges(store: Store):  # type: ignore[no-untyped-def]
    """A scrape hook refreshing the oldest-pending age and the disabled endpoints."""

    async def refresh() -> None:
        metrics.OLDEST_PENDING.set(await store.oldest_pending_age_s())
        metrics.ENDPOINTS_DISABLED.set(await store.disabled_count())

    return refresh


async def forget(store: Store, keep_s: float, stop: asyncio.Event, every_s: float = 600) -> None:
    """Delete settled deliveries past `keep_s`, every `every_s` seconds, until `stop`."""
    while not stop.is_set():
        try:
            while await store.forget(keep_s) > 0:
                pass
        except Exception as exc:  # PostgreSQL away: next round
            log.warning("webhook retention sweep failed: %s", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=every_s)


async def main(ctx: ServiceContext, options: WebhooksOptions | None = None) -> None:
    options = options or WebhooksOptions.from_env()
    policy = EgressPolicy(allow_local=options.allow_local)
    if options.allow_local:
        log.warning(
            "local development: webhooks may go to http:// URLs and loopback addresses "
            "(RUNLOOM_WEBHOOKS_ALLOW_LOCAL); in production only https to public addresses"
        )
    store = Store(ctx.pool, options.retry)
    sender = Sender(policy, timeout_s=options.timeout_s)
    dispatcher = Dispatcher(store, sender, ctx.js, options.dispatch)
    intake = Intake(store, on_enqueued=dispatcher.wake.set)
    declared = intake.consumer()
    # The durable starts at the stream's next event: it must exist before any endpoint does,
    # or the events between the two would reach nobody.
    await consumer.ensure(ctx.js, declared)
    responder = Responder(
        ctx.nc,
        ctx.js,
        QUEUE,
        Management(store, policy, grace_s=options.rotation_grace_s).routes(),
    )
    await responder.start()
    if ctx.management is not None:
        ctx.management.add_scrape_hook(consumer_gauges(ctx.js, declared.stream, declared.durable))
        ctx.management.add_scrape_hook(gauges(store))
    tasks = [
        asyncio.create_task(
            consumer.serve(
                declared, ctx.js, ctx.stop, events=EventLog(ctx.js, ctx.producer), ready=ctx.ready
            ),
            name="intake",
        ),
        asyncio.create_task(dispatcher.run(ctx.stop), name="dispatcher"),
        asyncio.create_task(forget(store, options.keep_s, ctx.stop), name="retention"),
    ]
    log.info("webhooks ready: intake consumer, dispatcher, responders in queue group %r", QUEUE)
    try:
        await ctx.stop.wait()
    finally:
        await responder.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
        await sender.close()


async def run(settings: Settings) -> None:
    await serve("webhooks", settings, main)
