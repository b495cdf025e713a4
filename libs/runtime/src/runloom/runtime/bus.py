"""NATS JetStream: connection, stream provisioning, publish and consume helpers.

Every publish carries the current W3C trace context in its headers; every consumer handler
runs inside the context its message carried. Malformed messages go to a dead-letter subject
with the reason; they never crash a consumer or block its queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.errors import NotFoundError
from runloom.contracts import subjects
from runloom.contracts.commands import DeadLetter
from runloom.runtime.config import Settings
from runloom.runtime.telemetry import context_from_headers, inject_headers, tracer

log = logging.getLogger(__name__)


class PoisonMessage(Exception):
    """Raised by a handler for a message that can never be processed: dead-lettered, acked."""


async def connect(url: str, name: str, **kwargs: Any) -> NATS:
    """Connect with reconnects forever: a restarted nats-server is picked up again."""

    async def _error_cb(exc: Exception) -> None:
        log.warning("nats error: %s", exc)

    return await nats.connect(
        url,
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.25,
        connect_timeout=2,
        error_cb=_error_cb,
        **kwargs,
    )


def stream_configs(settings: Settings) -> list[js_api.StreamConfig]:
    r = settings.stream_replicas
    return [
        js_api.StreamConfig(
            name=subjects.RUN_EVENTS_STREAM,
            subjects=[subjects.RUN_EVENTS_SUBJECTS],
            storage=js_api.StorageType.FILE,
            retention=js_api.RetentionPolicy.LIMITS,
            max_age=settings.events_max_age_s,
            duplicate_window=settings.duplicate_window_s,
            num_replicas=r,
            allow_direct=True,
        ),
        js_api.StreamConfig(
            name=subjects.COMMANDS_STREAM,
            subjects=[subjects.COMMANDS_SUBJECTS],
            storage=js_api.StorageType.FILE,
            retention=js_api.RetentionPolicy.WORK_QUEUE,
            duplicate_window=settings.duplicate_window_s,
            num_replicas=r,
        ),
        js_api.StreamConfig(
            name=subjects.JOBS_STREAM,
            subjects=[subjects.JOBS_SUBJECTS],
            storage=js_api.StorageType.FILE,
            retention=js_api.RetentionPolicy.WORK_QUEUE,
            duplicate_window=settings.duplicate_window_s,
            num_replicas=r,
        ),
        js_api.StreamConfig(
            name=subjects.DLQ_STREAM,
            subjects=[subjects.DLQ_SUBJECTS],
            storage=js_api.StorageType.FILE,
            retention=js_api.RetentionPolicy.LIMITS,
            max_age=30 * 24 * 3600,
            num_replicas=r,
        ),
    ]


async def provision(js: JetStreamContext, settings: Settings) -> None:
    """Create or update every stream (idempotent; safe from any number of replicas)."""
    for cfg in stream_configs(settings):
        try:
            await js.stream_info(cfg.name)  # type: ignore[arg-type]
            await js.update_stream(cfg)
        except NotFoundError:
            with contextlib.suppress(nats.js.errors.BadRequestError):
                await js.add_stream(cfg)
    with contextlib.suppress(Exception):
        await js.object_store(subjects.ARTIFACTS_BUCKET)
        return
    await js.create_object_store(
        subjects.ARTIFACTS_BUCKET,
        config=js_api.ObjectStoreConfig(
            bucket=subjects.ARTIFACTS_BUCKET,
            storage=js_api.StorageType.FILE,
            replicas=settings.stream_replicas,
        ),
    )


_encoder = msgspec.json.Encoder()


async def publish(
    js: JetStreamContext,
    subject: str,
    message: msgspec.Struct | bytes,
    *,
    msg_id: str | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 5.0,
) -> js_api.PubAck:
    """Publish to JetStream with trace context (and dedup id) in the headers."""
    hdrs = inject_headers(headers)
    if msg_id:
        hdrs["Nats-Msg-Id"] = msg_id
    body = message if isinstance(message, bytes) else _encoder.encode(message)
    return await js.publish(subject, body, headers=hdrs, timeout=timeout)


async def dead_letter(
    js: JetStreamContext, msg: Msg, *, stream: str, consumer: str, reason: str
) -> None:
    letter = DeadLetter(
        stream=stream,
        subject=msg.subject,
        consumer=consumer,
        reason=reason,
        payload=msg.data.decode("utf-8", "replace"),
        headers=dict(msg.headers or {}),
        time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    await publish(js, subjects.dead_letter(stream, consumer), letter)
    log.error("dead-lettered message on %s: %s", msg.subject, reason)


Handler = Callable[[Msg], Awaitable[None]]


async def run_pull_consumer(
    js: JetStreamContext,
    *,
    stream: str,
    durable: str,
    filter_subject: str,
    handler: Handler,
    stop: asyncio.Event,
    ack_wait: float = 30.0,
    max_deliver: int = -1,
    concurrency: int = 4,
    batch: int = 8,
) -> None:
    """Fetch from a durable pull consumer shared by all replicas; handle with bounded concurrency.

    The handler acks (or naks / extends) itself via `msg`. A handler raising PoisonMessage (or a
    decode error) dead-letters the message and acks it; any other exception naks it with delay,
    so it is redelivered, to this replica or another.
    """
    config = js_api.ConsumerConfig(
        durable_name=durable,
        ack_policy=js_api.AckPolicy.EXPLICIT,
        ack_wait=ack_wait,
        max_deliver=max_deliver,
        filter_subject=filter_subject,
        max_ack_pending=1000,
    )
    sub = await js.pull_subscribe(filter_subject, durable=durable, stream=stream, config=config)
    sem = asyncio.Semaphore(concurrency)
    tasks: set[asyncio.Task[None]] = set()

    async def _one(msg: Msg) -> None:
        try:
            ctx = context_from_headers(msg.headers)
            with tracer("runloom.bus").start_as_current_span(
                f"consume {filter_subject}", context=ctx
            ):
                await handler(msg)
        except (PoisonMessage, msgspec.DecodeError, msgspec.ValidationError) as exc:
            with contextlib.suppress(Exception):
                await dead_letter(js, msg, stream=stream, consumer=durable, reason=str(exc))
                await msg.ack()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("handler failed on %s; will be redelivered", msg.subject)
            with contextlib.suppress(Exception):
                await msg.nak(delay=1.0)
        finally:
            sem.release()

    while not stop.is_set():
        # Pull only what a free slot can start now: a fetched message waits without keep-alive,
        # and its ack deadline would run out in our queue instead of on another replica.
        await sem.acquire()
        sem.release()
        free = max(1, min(batch, concurrency - len(tasks)))
        try:
            msgs = await sub.fetch(free, timeout=1.0)
        except (TimeoutError, nats.errors.TimeoutError):
            continue
        except asyncio.CancelledError:
            break
        except Exception as exc:  # connection trouble: keep going, nats reconnects
            log.warning("fetch on %s failed: %s", durable, exc)
            await asyncio.sleep(0.5)
            continue
        for msg in msgs:
            await sem.acquire()
            task = asyncio.create_task(_one(msg))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
    for task in list(tasks):
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    with contextlib.suppress(Exception):
        await sub.unsubscribe()


async def keep_alive(msg: Msg, every: float, stop: asyncio.Event) -> None:
    """Extend a message's ack deadline (`in_progress`) until `stop` is set."""
    while not stop.is_set():
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=every)
        if stop.is_set():
            return
        with contextlib.suppress(Exception):
            await msg.in_progress()
