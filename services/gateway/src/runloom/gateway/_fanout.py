"""In-process fan-out: one JetStream subscription per run per gateway, shared by its clients.

A `RunFeed` holds one ordered push consumer on the run's subject, starting right after the
run's tail as read when the feed opened. Each stored event is decoded once, checked against
the feed's high-water mark (drop seq <= hwm; a jump means the subscription lost messages,
e.g. a slow-consumer drop or a consumer that silently died with the server), repaired by
re-reading the log, and handed to every client as one shared SSE frame. A watchdog compares
the feed with the log's tail when the subscription has been quiet, so a dead subscription is
noticed and replaced.

Each `Client` has a bounded queue. Offering never blocks (the subscription callback must
stay fast: nats-py runs one subscription's callbacks one after another); a client whose
queue overflows while live is stalled and is cut off, which never slows the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from nats.aio.msg import Msg
from nats.js import api as js_api
from runloom.contracts import subjects
from runloom.gateway._history import Epoch, Frame, History, head_of
from runloom.gateway.metrics import observe_event_latency
from runloom.runtime import bus
from runloom.runtime.eventlog import TRANSIENT_ERRORS, EventLog

if TYPE_CHECKING:
    from runloom.gateway._server import BodyPush

log = logging.getLogger(__name__)

FLUSH_POSTPONE = 16
"""Turns of the loop a flush of held frames waits at most for a feed that is behind."""


class Client:
    """One SSE connection's view of a feed: a bounded queue of frames.

    Cheap per event and small when idle: a plain list the writer takes whole (every frame
    ready at a wake-up goes out in one write), a bare future to wake the writer (made only
    while it waits), and one heartbeat timer re-armed per heartbeat period, not per event.

    While the writer waits live with nothing queued, frames that come next in order are held
    and written straight to the connection (`push`, when the server offers one) once the
    feed has handed out what arrived together: one write per client for a burst, and no
    wake-up of the writer's task. What cannot be written so goes to the queue, in order.
    A client holds at most a queue's worth: a longer burst is written as it fills, so a
    client whose connection takes it is never cut off for the length of a burst.
    """

    __slots__ = (
        "beat",
        "closing",
        "cut",
        "feed",
        "frames",
        "held",
        "live",
        "maxsize",
        "overflowed",
        "push",
        "replaying",
        "sent",
        "sent_stream",
        "task",
        "timer",
        "waiter",
        "wrote",
    )

    def __init__(self, feed: RunFeed, maxsize: int) -> None:
        self.feed = feed
        self.maxsize = maxsize
        self.frames: list[Frame] = []
        self.held: list[Frame] = []
        """Frames to write straight to the connection when the feed flushes (`release`)."""
        self.waiter: asyncio.Future[None] | None = None
        self.replaying = True
        """While replaying history an overflow is ours, not the client's: it re-reads later."""
        self.overflowed = False
        self.cut = False
        self.closing = False
        self.beat = False
        """A keep-alive is due: nothing was written for a heartbeat period."""
        self.wrote = False
        """Something was written since the last heartbeat tick."""
        self.timer: asyncio.TimerHandle | None = None
        self.task: asyncio.Task[object] | None = None
        self.push: BodyPush | None = None
        """Writes a frame straight to the connection if it can (the server's `BodyPush`)."""
        self.live = False
        """The writer waits live and forwards frames as stored: `offer` may push."""
        self.sent = 0
        """Run seq of the last frame written (kept by the writer while live)."""
        self.sent_stream = 0

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _parked(self) -> bool:
        """The writer waits live with nothing queued: frames may be written for it."""
        waiter = self.waiter
        return (
            self.live
            and not self.frames
            and self.push is not None
            and waiter is not None
            and not waiter.done()
        )

    def offer(self, frame: Frame, push: bool = False) -> None:
        """Queue a frame for the writer; with `push`, hold it to be written at once when the
        feed flushes, where it can be."""
        if self.cut:
            return
        held = self.held
        if len(held) >= self.maxsize:  # a burst as long as the queue: write it now
            self.release()
            held = self.held
        if (
            push
            and frame.seq == self.sent + len(held) + 1
            and not frame.terminal  # the writer ends the stream after it
            and self._parked()
        ):
            if not held:
                self.feed.hold(self)
            held.append(frame)
            return
        if held:  # what is held goes first
            self._queue_held()
        if len(self.frames) >= self.maxsize:
            self.overflowed = True
            if not self.replaying:
                self.cut_off()
            return
        self.frames.append(frame)
        self._wake()

    def release(self) -> int:
        """Write what is held straight to the connection if the writer still waits live;
        else queue it and wake the writer. Returns how many frames were written."""
        held = self.held
        if not held or self.cut:
            return 0
        first, last = held[0], held[-1]
        if first.seq == self.sent + 1 and self._parked():
            push = self.push
            assert push is not None  # `_parked` says so
            if push.chunked:
                data = first.chunk if len(held) == 1 else b"".join([f.chunk for f in held])
            else:
                data = first.sse() if len(held) == 1 else b"".join([f.sse() for f in held])
            if push(data):
                self.held = []
                self.sent, self.sent_stream = last.seq, last.stream_seq
                self.wrote = True
                return len(held)
        self._queue_held()
        self._wake()
        return 0

    def _queue_held(self) -> None:
        """Put the held frames at the head of the writer's queue (they come before it)."""
        self.frames[:0] = self.held
        self.held = []

    def take(self) -> list[Frame]:
        """Every queued frame, in order (the queue is left empty)."""
        frames, self.frames = self.frames, []
        return frames

    def cut_off(self) -> None:
        """A stalled client: drop it (it resumes with its cursor when it reads again)."""
        self.cut = True
        self.frames = []
        self.held = []
        self.feed.hub.stalled_cut += 1
        self._wake()
        task, self.task = self.task, None  # cancelled once, by one of us
        if task is not None:
            task.cancel()

    def close(self) -> None:
        """Finish after what is queued (graceful drain)."""
        self._queue_held()
        self.closing = True
        self._wake()

    def heartbeat(self, period: float) -> None:
        """Wake for a keep-alive when nothing was written for `period` (checked every half)."""
        self.stop_heartbeat()
        loop = asyncio.get_running_loop()

        def tick() -> None:
            if self.wrote:
                self.wrote = False
            else:
                self.beat = True
                self._wake()
            self.timer = loop.call_later(period / 2, tick)

        self.timer = loop.call_later(period / 2, tick)

    def stop_heartbeat(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    async def wait(self) -> None:
        """Until a frame is queued, a keep-alive is due, or the client closes or is cut."""
        if self.frames or self.beat or self.closing or self.cut:
            return
        self.waiter = asyncio.get_running_loop().create_future()
        try:
            await self.waiter
        finally:
            self.waiter = None

    async def next(self, timeout: float) -> Frame | None:
        """The next queued frame, or None after `timeout` (one at a time: for tests and tools;
        the SSE writer takes the whole queue)."""
        if not self.frames:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self.wait()
        if self.frames:
            return self.frames.pop(0)
        return None


class RunFeed:
    def __init__(self, hub: Hub, run_id: str) -> None:
        self.hub = hub
        self.run_id = run_id
        self.clients: set[Client] = set()
        self.hwm = 0
        """Run seq of the last event handed to clients."""
        self.hwm_stream = 0
        self.ended = False
        self.sub: object | None = None
        self.subscribed = asyncio.Event()
        """Set while the feed holds a subscription."""
        self.lock = asyncio.Lock()
        self.last_activity = time.monotonic()
        self.watchdog: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()
        self.idle_since: float | None = None
        self.holding: list[Client] = []
        """Clients holding frames until `_flush` runs (once per burst handed out)."""
        self.postponed = 0
        """Turns `_flush` has been put off while the subscription had more waiting."""

    async def open(self) -> None:
        tail = await self.hub.log.tail(self.run_id, any_replica=True)
        self.hwm, self.hwm_stream = tail.run_seq, tail.stream_seq
        self.ended = tail.terminal is not None
        if not self.ended:
            try:
                # While a stream or meta leader is being elected a consumer cannot be made for
                # seconds: clients join now (their replay needs no consumer) and the watchdog
                # subscribes when it can, handing out what the log holds meanwhile.
                async with asyncio.timeout(self.hub.subscribe_wait):
                    await self._subscribe()
            except (TimeoutError, *TRANSIENT_ERRORS) as exc:
                log.warning(
                    "run %s: no subscription yet (%r); the watchdog retries", self.run_id, exc
                )
            self.watchdog = asyncio.create_task(self._watch())
        self.ready.set()

    async def _subscribe(self) -> None:
        config = js_api.ConsumerConfig(
            deliver_policy=js_api.DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=self.hwm_stream + 1,
            inactive_threshold=60.0,
        )
        self.sub = await self.hub.js.subscribe(
            subjects.run_events(self.run_id),
            stream=subjects.RUN_EVENTS_STREAM,
            cb=self._on_msg,
            ordered_consumer=True,
            idle_heartbeat=self.hub.idle_heartbeat,
            config=config,
            pending_msgs_limit=self.hub.pending_msgs_limit,
        )
        self.subscribed.set()

    async def _unsubscribe(self) -> None:
        sub, self.sub = self.sub, None
        self.subscribed.clear()
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()  # type: ignore[attr-defined]

    async def _on_msg(self, msg: Msg) -> None:
        self.last_activity = time.monotonic()
        async with self.lock:
            stream_seq = bus.stream_seq(msg)
            if stream_seq <= self.hwm_stream or self.ended:
                return
            raw = bytes(msg.data)
            ev = head_of(raw)
            if ev.seq <= self.hwm:
                return
            if ev.seq > self.hwm + 1:
                self.hub.gaps_repaired += 1
                await self._repair_locked()
                if ev.seq <= self.hwm:
                    return
            epoch = await self.hub.epoch.current()
            self._dispatch(self.hub.history.frame(epoch, ev, raw, stream_seq), live=True)
            observe_event_latency(ev.time)

    async def _repair_locked(self) -> None:
        """Hand out what the log holds after the high-water mark (the subscription missed it)."""
        epoch = await self.hub.epoch.current()
        # Any replica may answer (no wait for a leader being elected): a read that falls
        # short leaves a jump that clients fill from the log, and the next round goes on.
        log_read = self.hub.log.read(
            self.run_id, after_stream_seq=self.hwm_stream, any_replica=True
        )
        async for se in log_read:
            if se.event.seq <= self.hwm:
                continue
            if se.event.seq != self.hwm + 1:
                log.error("run %s: log skips from %d to %d", self.run_id, self.hwm, se.event.seq)
                break
            self._dispatch(self.hub.history.frame(epoch, se.event, se.raw, se.stream_seq))
            if self.ended:
                break

    def _dispatch(self, frame: Frame, live: bool = False) -> None:
        """Hand a frame to every client; `live`: from the subscription (not a repair)."""
        self.hwm, self.hwm_stream = frame.seq, frame.stream_seq
        self.hub.delivered += 1
        for client in list(self.clients):
            client.offer(frame, live)
        if frame.terminal:
            self.ended = True
            asyncio.get_running_loop().create_task(self._unsubscribe())

    def hold(self, client: Client) -> None:
        """`client` holds frames: write them once this burst is handed out."""
        if not self.holding:
            asyncio.get_running_loop().call_soon(self._flush)
        self.holding.append(client)

    def _flush(self) -> None:
        # While the subscription has more waiting, the feed is behind: let it hand that out
        # too, so each client gets several frames to a write (a few turns at most).
        sub = self.sub
        if sub is not None and sub.pending_msgs and self.postponed < FLUSH_POSTPONE:  # type: ignore[attr-defined]
            self.postponed += 1
            asyncio.get_running_loop().call_soon(self._flush)
            return
        self.postponed = 0
        clients, self.holding = self.holding, []
        self.hub.pushed += sum(client.release() for client in clients)

    async def _watch(self) -> None:
        """Replace a subscription that went quiet while the log moved on.

        A quiet run is checked every `watch_interval`, backing off to 4x that while nothing
        changes (one direct get per idle run per check).
        """
        base = interval = self.hub.watch_interval
        while not self.ended:
            await asyncio.sleep(interval)
            if time.monotonic() - self.last_activity < interval:
                interval = base
                continue
            try:
                tail = await self.hub.log.tail(self.run_id, any_replica=True)
            except Exception as exc:  # server away: try again next round
                log.debug("watchdog on %s: %s", self.run_id, exc)
                interval = base
                continue
            if tail.run_seq <= self.hwm:
                if self.sub is None:  # opened without one: try again every round
                    with contextlib.suppress(Exception):
                        async with self.lock:
                            if not self.ended:
                                await self._subscribe()
                    continue
                interval = min(interval * 2, base * 4)
                continue
            interval = base
            log.warning("run %s: subscription missed events; repairing from the log", self.run_id)
            self.hub.gaps_repaired += 1
            try:
                async with self.lock:
                    await self._repair_locked()
                    if not self.ended:
                        await self._unsubscribe()
                        await self._subscribe()
            except Exception as exc:  # server away mid-repair: the next round tries again
                log.warning("run %s: repair failed (%s); retrying", self.run_id, exc)
                interval = base
                continue
            self.last_activity = time.monotonic()

    async def close(self) -> None:
        self.ended = True
        if self.watchdog is not None:
            self.watchdog.cancel()
        await self._unsubscribe()


class Hub:
    """Every run feed of this gateway process."""

    def __init__(
        self,
        log: EventLog,
        history: History,
        epoch: Epoch,
        *,
        queue_size: int = 1024,
        watch_interval: float = 1.0,
        subscribe_wait: float = 1.5,
        idle_heartbeat: float = 2.0,
        pending_msgs_limit: int = 65536,
    ) -> None:
        self.log = log
        self.js = log.js
        self.history = history
        self.epoch = epoch
        self.queue_size = queue_size
        self.watch_interval = watch_interval
        self.subscribe_wait = subscribe_wait
        """How long a feed's opening waits for its subscription before clients join anyway."""
        self.idle_heartbeat = idle_heartbeat
        self.pending_msgs_limit = pending_msgs_limit
        self.feeds: dict[str, RunFeed] = {}
        self.draining = False
        self.delivered = 0
        self.pushed = 0
        """Frames written to a connection straight from the feed (see `Client.offer`)."""
        self.gaps_repaired = 0
        self.stalled_cut = 0

    @property
    def client_count(self) -> int:
        return sum(len(f.clients) for f in self.feeds.values())

    async def attach(self, run_id: str) -> Client:
        """Join the run's feed (opening it first if needed); the client queues from now on."""
        feed = self.feeds.get(run_id)
        if feed is None or (feed.ended and feed.ready.is_set() and not feed.clients):
            feed = RunFeed(self, run_id)
            self.feeds[run_id] = feed
            try:
                await feed.open()
            except BaseException:
                self.feeds.pop(run_id, None)
                feed.ready.set()
                raise
        else:
            await feed.ready.wait()
            if self.feeds.get(run_id) is not feed and not feed.ended:
                # Its opening failed (the server was away): a client joining it would wait
                # on a feed with no subscription and no watchdog. Open a fresh one.
                return await self.attach(run_id)
        client = Client(feed, self.queue_size)
        feed.clients.add(client)
        return client

    async def detach(self, client: Client) -> None:
        client.stop_heartbeat()
        feed = client.feed
        feed.clients.discard(client)
        if not feed.clients and self.feeds.get(feed.run_id) is feed:
            del self.feeds[feed.run_id]
            await feed.close()

    def drain(self) -> None:
        """Shutting down: every client finishes what it has queued and closes."""
        self.draining = True
        for feed in list(self.feeds.values()):
            for client in list(feed.clients):
                client.close()

    async def close(self) -> None:
        self.drain()
        for feed in list(self.feeds.values()):
            await feed.close()
        self.feeds.clear()
