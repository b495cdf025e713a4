"""The streaming core every events route uses: archive consumer, fan-out hub, history, tokens.

`start` wires it once per process (in the app's lifespan, before the routes serve), `stop`
ends the streams and the archiver. On SIGTERM the hub drains at once, so clients resume on
another replica with their cursor while uvicorn waits for the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from dataclasses import dataclass
from typing import Any

import asyncpg
from nats.js import JetStreamContext
from runloom.gateway._fanout import Hub
from runloom.gateway._history import Epoch, History
from runloom.gateway._options import StreamingOptions
from runloom.gateway._tokens import StreamTokens, install_redaction
from runloom.gateway.store.archive import PgArchive, run_archiver
from runloom.runtime.eventlog import EventLog


@dataclass
class Streaming:
    """One process's streaming machinery (typed; reached as `state.streaming`)."""

    options: StreamingOptions
    archive: PgArchive
    epoch: Epoch
    history: History
    hub: Hub
    tokens: StreamTokens
    stop: asyncio.Event
    archiver: asyncio.Task[None] | None = None


async def start(js: JetStreamContext, pool: asyncpg.Pool, log: EventLog) -> Streaming:
    """Build the streaming core on the gateway's connections and start the archiver."""
    options = StreamingOptions.from_env()
    archive = PgArchive(pool)
    log.archive = archive
    epoch = Epoch(js)
    await epoch.refresh()
    history = History(log, archive, epoch)
    hub = Hub(
        log,
        history,
        epoch,
        queue_size=options.queue_size,
        watch_interval=options.watch_interval_s,
    )
    tokens = await StreamTokens.load(pool, options.token_ttl_s)
    s = Streaming(options, archive, epoch, history, hub, tokens, asyncio.Event())
    if options.archive:
        s.archiver = asyncio.create_task(run_archiver(js, pool, s.stop, events=log))
    install_redaction()
    _drain_on_sigterm(hub)
    return s


def _drain_on_sigterm(hub: Hub) -> None:
    """On SIGTERM, end SSE streams at once (clients resume elsewhere with their cursor),
    before uvicorn waits for open connections; then let uvicorn's own handler run."""
    loop = asyncio.get_running_loop()
    with contextlib.suppress(ValueError):  # not the main thread (in-process test servers)
        previous = signal.getsignal(signal.SIGTERM)

        def handler(signum: int, frame: Any) -> None:
            loop.call_soon_threadsafe(hub.drain)
            if callable(previous):
                previous(signum, frame)

        signal.signal(signal.SIGTERM, handler)


async def stop(s: Streaming) -> None:
    """Close every stream, then stop the archiver (waiting up to 5 s for its batch)."""
    await s.hub.close()
    s.stop.set()
    if s.archiver is not None:
        with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(s.archiver, timeout=5)
