"""NATS JetStream: connection, stream provisioning, publish and consume helpers.

Every publish is a PRODUCER span whose W3C trace context rides in the message's headers
(`runloom.runtime.telemetry`). Consumers are declared and served by `runloom.runtime.consumer`,
which handles each message in a CONSUMER span and dead-letters what it cannot apply
(`dead_letter`).
"""

from __future__ import annotations

import asyncio
import asyncio.constants
import contextlib
import dataclasses
import logging
import re
import ssl
import time
import weakref
from collections import deque
from collections.abc import Sequence
from pathlib import Path
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
from runloom.contracts.headers import Header
from runloom.contracts.types import now
from runloom.runtime import access, metrics
from runloom.runtime.config import Settings
from runloom.runtime.telemetry import destination_template, inject_headers, producer_span

log = logging.getLogger(__name__)


class PoisonMessage(Exception):
    """Raised by a handler for a message that can never be processed: set apart, acked."""


PING_INTERVAL_S = 2.0
"""How often the client pings its server. A server that is partitioned away or stopped
(SIGSTOP) leaves the TCP connection open and silent: only unanswered pings reveal it, after
at most (MAX_OUTSTANDING_PINGS + 1) intervals, and the client then moves to another server.
nats-py's default (120 s) kept clients on a partitioned cluster node for the whole partition."""
MAX_OUTSTANDING_PINGS = 2
TLS_SHUTDOWN_TIMEOUT_S = 1.0


_V1_ACK_TOKENS = 9
"""`$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.<pending>`; the
newer form (domain and account hash first) has 12."""


def stream_seq(msg: Msg) -> int:
    """A JetStream message's stream sequence, read from its reply subject: what
    `msg.metadata.sequence.stream` says, without building the rest of the metadata (its
    timestamp alone costs several times this; the gateway reads it twice an event)."""
    tokens = Msg.Metadata._get_metadata_fields(msg.reply)
    return int(tokens[5] if len(tokens) == _V1_ACK_TOKENS else tokens[Msg.Ack.StreamSeq])


async def connect(
    url: str,
    name: str,
    *,
    credentials: str | Path = "",
    ca: str | Path = "",
    **kwargs: Any,
) -> NATS:
    """Connect with reconnects forever: a restarted nats-server is picked up again.

    `url` may list every server of a cluster, comma-separated; the client then fails over
    between them (and learns the others from the cluster). A silent server is given up
    within about 6 s (`PING_INTERVAL_S`).

    `credentials`: the path of an identity's nkey seed file (`<identity>.nk`): the client
    authenticates as that identity and takes its replies on the identity's own inbox prefix
    (`access.inbox_prefix`), the only inbox its permissions let it read. `ca`: a CA
    certificate file; the connection is then TLS and the server's certificate is verified."""

    refusals = Refusals()
    theirs = kwargs.pop("error_cb", None)

    async def _error_cb(exc: Exception) -> None:
        refusals.note(exc)
        log.warning("nats error: %s", exc)
        if theirs is not None:
            await theirs(exc)

    options: dict[str, Any] = {
        "name": name,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": 0.25,
        "connect_timeout": 2,
        "ping_interval": PING_INTERVAL_S,
        "max_outstanding_pings": MAX_OUTSTANDING_PINGS,
        "error_cb": _error_cb,
    }
    if credentials:
        path = Path(credentials)
        options["nkeys_seed"] = str(path)
        options["inbox_prefix"] = access.inbox_prefix(access.identity_of(path))
    if ca:
        options["tls"] = ssl.create_default_context(cafile=str(ca))
        # nats-py waits for a TLS connection to close before it moves to another server, and
        # asyncio gives a silent (partitioned, SIGSTOPped) peer 30 s to answer the TLS
        # close_notify: failover took 30 s instead of the ping's 6. nats-py does not pass
        # start_tls a shutdown timeout, so the default is lowered for this process.
        asyncio.constants.SSL_SHUTDOWN_TIMEOUT = TLS_SHUTDOWN_TIMEOUT_S
    nc = await nats.connect([u.strip() for u in url.split(",") if u.strip()], **options | kwargs)
    _REFUSALS[nc] = refusals
    return nc


_REFUSED = re.compile(
    r"permissions violation for (publish|subscription) to "
    r'"?([^"\s]+)"?(?: using queue "?([^"\s]+))?'
)


@dataclasses.dataclass(frozen=True)
class Refusal:
    """A permission violation the server reported on a connection (an asynchronous `-ERR`: the
    server drops what it refused and keeps the connection; a refused request goes unanswered,
    a refused subscription receives nothing)."""

    action: str
    """`publish` or `subscription`."""
    subject: str
    """As the server named it, in lower case (nats-py lowers the server's error line)."""
    queue: str | None
    at: float
    """When it was reported (`time.monotonic()`)."""

    def under(self, prefix: str) -> str | None:
        """The refused subject with `prefix`'s case when it is `prefix` or below it, else None."""
        low = prefix.lower()
        if self.subject == low or self.subject.startswith(low + "."):
            return prefix + self.subject[len(low) :]
        return None


def explain(refused: Sequence[tuple[Refusal, str]]) -> str:
    """What a person reads: what was refused (each action and subject once) and what to do."""
    what = ", ".join(dict.fromkeys(f"{r.action} to {subject}" for r, subject in refused))
    return (
        f"the server refuses it: permissions violation for {what}; check this service's NATS "
        "identity (its credential, and the permissions the server grants it)"
    )


class Refusals:
    """The permission violations reported on one connection lately (the newest `keep`)."""

    def __init__(self, keep: int = 32) -> None:
        self._recent: deque[Refusal] = deque(maxlen=keep)

    def note(self, exc: BaseException) -> Refusal | None:
        found = _REFUSED.search(str(exc).lower())
        if found is None:
            return None
        action, subject, queue = found.groups()
        refusal = Refusal(action, subject, queue, time.monotonic())
        self._recent.append(refusal)
        return refusal

    def since(
        self, prefixes: Sequence[str], *, since: float, action: str | None = None
    ) -> list[tuple[Refusal, str]]:
        """The refusals since `since` (monotonic) of subjects under `prefixes` (of `action`
        when given), each with its subject in the prefix's case; in the order of `prefixes`
        (the most telling first)."""
        found: list[tuple[int, Refusal, str]] = []
        for refusal in self._recent:
            if refusal.at < since or (action is not None and refusal.action != action):
                continue
            for rank, prefix in enumerate(prefixes):
                subject = refusal.under(prefix)
                if subject is not None:
                    found.append((rank, refusal, subject))
                    break
        found.sort(key=lambda f: f[0])
        return [(refusal, subject) for _, refusal, subject in found]


_REFUSALS: weakref.WeakKeyDictionary[Any, Refusals] = weakref.WeakKeyDictionary()


def refusals(nc: Any) -> Refusals:
    """The permission violations reported on `nc` (one made by `connect`; any other connection
    has none to tell)."""
    found = _REFUSALS.get(nc)
    return found if found is not None else Refusals(keep=0)


async def connect_as(settings: Settings, name: str, **kwargs: Any) -> NATS:
    """`connect` with the process's own credential and CA from its settings."""
    return await connect(
        settings.effective_nats_url,
        name,
        credentials=settings.nats_credentials,
        ca=settings.nats_ca,
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
            max_bytes=settings.events_max_bytes,
            # Full: refuse the append (StoreFull, a 503 to clients), never drop stored events.
            discard=js_api.DiscardPolicy.NEW,
            duplicate_window=settings.duplicate_window_s,
            num_replicas=r,
            allow_direct=True,
            allow_atomic=True,
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


CREATED_METADATA = "runloom.created_ms"
"""Stream metadata: when the stream was first created (ms), set by a restore (the server's own
creation time is then the restore's); provisioning keeps every `runloom.` key."""


def created_ms(info: js_api.StreamInfo) -> int:
    """The stream's original creation time in ms (kept across a backup and restore)."""
    kept = (info.config.metadata or {}).get(CREATED_METADATA)
    if kept:
        return int(kept)
    return int(info.created.timestamp() * 1000) if info.created is not None else 0


async def provision(js: JetStreamContext, settings: Settings) -> None:
    """Create or update every stream (idempotent; safe from any number of replicas)."""
    for cfg in stream_configs(settings):
        try:
            info = await js.stream_info(cfg.name)  # type: ignore[arg-type]
            kept = {
                k: v for k, v in (info.config.metadata or {}).items() if k.startswith("runloom.")
            }
            await js.update_stream(dataclasses.replace(cfg, metadata=kept) if kept else cfg)
        except NotFoundError:
            with contextlib.suppress(nats.js.errors.BadRequestError):
                await js.add_stream(cfg)
    for bucket, ttl in BUCKETS.items():
        with contextlib.suppress(Exception):
            await js.object_store(bucket)
            continue
        await js.create_object_store(
            bucket,
            config=js_api.ObjectStoreConfig(
                bucket=bucket,
                storage=js_api.StorageType.FILE,
                replicas=settings.stream_replicas,
                ttl=ttl,
            ),
        )

    for kv in KV_BUCKETS:
        with contextlib.suppress(Exception):
            await js.key_value(kv)
            continue
        await js.create_key_value(
            config=js_api.KeyValueConfig(
                bucket=kv,
                history=1,
                storage=js_api.StorageType.FILE,
                replicas=settings.stream_replicas,
            )
        )


KV_BUCKETS: tuple[str, ...] = (subjects.ERASURES_BUCKET,)
"""Key-value buckets (streams `KV_<bucket>`): the erasure jobs' records."""


BUCKETS: dict[str, float | None] = {
    subjects.ARTIFACTS_BUCKET: None,
    subjects.CORPUS_UPLOADS_BUCKET: 3600.0,
}
"""Object stores and how long an object lives (None: forever). An upload's text is read once
by the orchestrator and deleted; the hour only sweeps what a crash left behind."""


_encoder = msgspec.json.Encoder()


async def publish(
    js: JetStreamContext,
    subject: str,
    message: msgspec.Struct | bytes,
    *,
    msg_id: str | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 5.0,
    conversation_id: str | None = None,
) -> js_api.PubAck:
    """Publish to JetStream in a PRODUCER span, its context (and the dedup id) in the headers.

    `conversation_id`: the run the message belongs to (defaults to the message's `run_id`).
    """
    hdrs = dict(headers or {})
    if msg_id:
        hdrs[js_api.Header.MSG_ID] = msg_id
    body = message if isinstance(message, bytes) else _encoder.encode(message)
    run_id = conversation_id or getattr(message, "run_id", None)
    with producer_span(subject, hdrs, message_id=msg_id, conversation_id=run_id):
        ack = await js.publish(subject, body, headers=hdrs, timeout=timeout)
    metrics.MESSAGES_PUBLISHED.labels(destination_template(subject)).inc()
    return ack


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
        time=now(),
    )
    await publish(js, subjects.dead_letter(stream, consumer), letter)
    metrics.DEAD_LETTERS.labels(stream, consumer).inc()
    log.error("dead-lettered message on %s: %s", msg.subject, reason)


async def reply(nc: NATS, msg: Msg, body: bytes = b"", *, error: str | None = None) -> None:
    """Answer a core NATS request (if it asked for an answer), with the trace context.

    `error` goes in the `Runloom-Error` header (one line; the body is then empty): `unavailable`
    (retry later) or why the request is invalid. A requester gone meanwhile is not an error.
    """
    if not msg.reply:
        return
    if error:
        error = " ".join(error.split())[:1000]
    headers = inject_headers({Header.ERROR: error} if error else None)
    with contextlib.suppress(Exception):
        await nc.publish(msg.reply, body, headers=headers or None)
