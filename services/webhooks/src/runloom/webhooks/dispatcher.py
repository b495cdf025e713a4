"""The dispatcher: claims due deliveries, signs and sends each, records how it went.

One loop per replica; any number of replicas share the work through `Store.claim`'s leases.
Each claimed delivery is attempted in its own task (at most `concurrency` at once); a
delivery whose replica dies mid-attempt is claimed again when its lease runs out. Between
rounds the loop waits for a wake-up (the intake stored something, an attempt finished) or
`poll_s`, whichever comes first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from nats.js import JetStreamContext
from runloom.contracts import subjects
from runloom.webhooks import metrics, signing
from runloom.webhooks.intake import DURABLE
from runloom.webhooks.sender import Sender
from runloom.webhooks.store import Claimed, Store

log = logging.getLogger(__name__)

FLOOR_TIMEOUT_S = 0.5
"""How long a round waits for the intake's ack floor."""


@dataclass(frozen=True, kw_only=True)
class DispatchOptions:
    concurrency: int = 32
    """Attempts in flight at once per replica."""
    poll_s: float = 0.25
    """Longest wait between two looks for due deliveries."""
    lease_s: float = 60.0
    """How long a claimed delivery is this replica's (longer than an attempt may take)."""


class Dispatcher:
    def __init__(
        self,
        store: Store,
        sender: Sender,
        js: JetStreamContext,
        options: DispatchOptions | None = None,
    ) -> None:
        self.store = store
        self.sender = sender
        self.js = js
        self.options = options or DispatchOptions()
        self.wake = asyncio.Event()
        self.floor = 0
        self.tasks: set[asyncio.Task[None]] = set()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            claimed: list[Claimed] = []
            try:
                await self._refresh_floor()
            except Exception as exc:  # NATS away: what is stored up to the last floor still goes
                log.debug("intake ack floor unknown (%s); sending up to %d", exc, self.floor)
            try:
                free = self.options.concurrency - len(self.tasks)
                claimed = await self.store.claim(self.floor, free, self.options.lease_s)
            except Exception as exc:  # PostgreSQL away: try again next round
                log.warning("webhook dispatch round failed: %s", exc)
            for c in claimed:
                task = asyncio.create_task(self._attempt(c), name=f"webhook {c.id}")
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
            if claimed and len(self.tasks) < self.options.concurrency:
                continue
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.options.poll_s):
                    await _first(self.wake, stop)
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _refresh_floor(self) -> None:
        """Every RUN_EVENTS message up to the intake's ack floor is stored or skipped. Bounded:
        with NATS away, a round goes on with the floor it knew instead of waiting."""
        async with asyncio.timeout(FLOOR_TIMEOUT_S):
            info = await self.js.consumer_info(subjects.RUN_EVENTS_STREAM, DURABLE)
        floor = int(info.ack_floor.stream_seq or 0) if info.ack_floor else 0
        self.floor = max(self.floor, floor)

    async def _attempt(self, c: Claimed) -> None:
        started = time.perf_counter()
        try:
            sent = signing.headers(c.secrets, c.event_id, int(time.time()), c.body)
            attempt = await self.sender.post(c.url, sent, c.body)
            metrics.ATTEMPT_DURATION.observe(time.perf_counter() - started)
            outcome = await self.store.settle(c, attempt)
            metrics.ATTEMPTS.labels(outcome).inc()
            if outcome != "delivered":
                log.info(
                    "webhook %s to endpoint %s: %s (attempt %d): %s",
                    c.event_id,
                    c.endpoint_id,
                    outcome,
                    c.attempts + 1,
                    attempt.error,
                )
        except Exception:  # the store away: the lease runs out and the delivery is claimed again
            log.exception("webhook %s: attempt not recorded; it will be tried again", c.id)
        finally:
            self.wake.set()


async def _first(*events: asyncio.Event) -> None:
    waits = [asyncio.create_task(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
