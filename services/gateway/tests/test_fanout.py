"""Fan-out: a stalled client is cut off while 50 others keep receiving, unslowed."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import time
from urllib.parse import urlsplit

import httpx
import pytest
from runloom.contracts.events import RunCompleted, StepProgress
from runloom.runtime.eventlog import EventLog

pytestmark = [
    pytest.mark.platform_services("gateway"),
    pytest.mark.platform_env(RUNLOOM_SSE_QUEUE="32"),
]

EVENTS = 220
PAD = "x" * 32_000  # past every kernel buffer (tcp_wmem allows 4 MB)


async def stalled_connection(url: str, path: str, key: str) -> socket.socket:
    """A client that asks for the stream, then never reads (tiny receive window)."""
    parts = urlsplit(url)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, (parts.hostname, parts.port))
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nAuthorization: Bearer {key}\r\n"
        "Accept: text/event-stream\r\n\r\n"
    )
    await loop.sock_sendall(sock, request.encode())
    return sock


async def test_a_stalled_client_is_cut_off_and_never_slows_the_others(platform, js, reader, poll):
    limits = httpx.Limits(max_connections=100)
    async with httpx.AsyncClient(
        base_url=platform.url, headers=platform.headers(), limits=limits, timeout=30
    ) as c:
        run_id = (await c.post("/v1/runs", json={"question": "fan out"})).json()["id"]
        log = EventLog(js, "w")
        tenant = (await log.events(run_id))[0].tenant_id
        path = f"/v1/runs/{run_id}/events"
        stalled = await stalled_connection(platform.url, path, platform.api_key)
        readers = [reader() for _ in range(50)]
        tasks = [asyncio.create_task(r.read(c, path, timeout=60)) for r in readers]
        await poll(lambda: _all(readers, 1))  # everyone is connected and got run.created

        started = time.monotonic()
        for i in range(EVENTS):
            await log.append(run_id, tenant, StepProgress(step_id="s", message=f"{i} {PAD}"))
        await log.append(run_id, tenant, RunCompleted())
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
        elapsed = time.monotonic() - started
        for r in readers:
            assert r.ended and r.seqs() == list(range(1, EVENTS + 3))
        assert elapsed < 45

        # The stalled client now reads what the server had managed to send: no terminal
        # event, and the connection is closed (it was cut off, not left hanging).
        loop = asyncio.get_running_loop()
        received = b""
        async with asyncio.timeout(20):
            while chunk := await loop.sock_recv(stalled, 65536):
                received += chunk
        stalled.close()
        assert b"event: run.completed" not in received
        assert received.count(b"event: ") < EVENTS


async def test_frames_written_at_once_and_queued_frames_interleave_without_a_gap(
    platform, js, reader, poll
):
    """Frames that come while a client's writer waits are written straight to its connection,
    one at a time or a group commit's together; the run's last frame goes through the writer's
    queue. Mixed, every client still reads every event once, in order."""
    async with httpx.AsyncClient(
        base_url=platform.url, headers=platform.headers(), timeout=30
    ) as c:
        run_id = (await c.post("/v1/runs", json={"question": "push and queue"})).json()["id"]
        log = EventLog(js, "w")
        tenant = (await log.events(run_id))[0].tenant_id
        path = f"/v1/runs/{run_id}/events"
        readers = [reader() for _ in range(20)]
        tasks = [asyncio.create_task(r.read(c, path, timeout=60)) for r in readers]
        await poll(lambda: _all(readers, 1))
        before = (await c.get("/metrics/streaming")).json()["frames_pushed"]

        n = 0
        for _ in range(8):
            for _ in range(4):  # one at a time: each arrives alone
                await log.append(run_id, tenant, StepProgress(step_id="s", message=f"{n}"))
                n += 1
            group = [StepProgress(step_id="s", message=f"{n + i}") for i in range(12)]
            await asyncio.gather(*(log.append(run_id, tenant, p) for p in group))
            n += len(group)
        await log.append(run_id, tenant, RunCompleted())
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
        for r in readers:
            assert r.ended and r.seqs() == list(range(1, n + 3))
        pushed = (await c.get("/metrics/streaming")).json()["frames_pushed"] - before
        assert 0 < pushed < len(readers) * (n + 1)


async def _all(readers, n: int) -> bool:
    return all(len(r.events) >= n for r in readers)


# -- the nats-py pitfalls, against the hub in process (real nats-server and Postgres) ------------


async def _hub(js, pool, **options):
    from runloom.gateway._fanout import Hub
    from runloom.gateway._history import Epoch, History
    from runloom.gateway.store.archive import PgArchive

    log = EventLog(js, "hub", archive=PgArchive(pool))
    epoch = Epoch(js)
    return Hub(log, History(log, PgArchive(pool), epoch), epoch, **options), log


async def _drain(client, until_seq: int, timeout: float = 20) -> list[int]:
    seqs: list[int] = []
    async with asyncio.timeout(timeout):
        while not seqs or seqs[-1] < until_seq:
            frame = await client.next(1.0)
            if frame is not None:
                seqs.append(frame.seq)
    return seqs


async def test_messages_dropped_by_a_full_subscription_queue_are_repaired(js, pool):
    from runloom.contracts.ids import new_id

    hub, log = await _hub(js, pool, pending_msgs_limit=4, queue_size=10_000)
    run_id = new_id("run")
    await log.append(run_id, "t1", StepProgress(step_id="s", message="first"))
    client = await hub.attach(run_id)
    try:
        feed = client.feed
        async with feed.lock:  # a slow handler: the subscription's callbacks cannot run
            for i in range(40):
                await log.append(run_id, "t1", StepProgress(step_id="s", message=str(i)))
            await asyncio.sleep(0.5)  # let the client library overflow its queue meanwhile
        await log.append(run_id, "t1", StepProgress(step_id="s", message="last"))
        assert await _drain(client, 42) == list(range(2, 43))  # no gap, no duplicate
        assert hub.gaps_repaired >= 1  # messages were really dropped, and repaired
    finally:
        await hub.detach(client)
        await hub.close()


async def test_frames_held_for_a_waiting_writer_are_written_together_or_queued_in_order(
    nc, js, pool
):
    """A writer waiting live: a group commit's frames are held while the feed hands them out,
    then written in one go through the connection's push, without waking the writer. When the
    connection cannot take them they go to the writer's queue, still in order."""
    from runloom.contracts.ids import new_id

    hub, log = await _hub(js, pool)
    run_id = new_id("run")
    await log.append(run_id, "t1", StepProgress(step_id="s", message="first"))
    client = await hub.attach(run_id)
    writes: list[bytes] = []
    six = asyncio.Event()

    class Connection:  # what the server's BodyPush does with bytes, kept here to read back
        chunked = False
        accept = True

        def __call__(self, data: bytes) -> bool:
            if self.accept:
                writes.append(data)
                if b"".join(writes).count(b"event: step.progress") >= 6:
                    six.set()
            return self.accept

    push = Connection()

    async def group(n: int) -> None:
        steps = [StepProgress(step_id="s", message=str(i)) for i in range(n)]
        await asyncio.gather(*(log.append(run_id, "t1", p) for p in steps))

    # As the SSE writer once it has replayed seq 1 and waits live:
    client.push, client.live, client.sent = push, True, 1  # type: ignore[assignment]
    try:
        waiting = asyncio.create_task(client.wait())
        feed = client.feed
        async with feed.lock:  # the feed is busy while the six arrive: they come together
            await group(6)
            async with asyncio.timeout(20):
                while feed.sub.pending_msgs < 5:  # type: ignore[union-attr]
                    await nc.flush()  # a round trip to the server: deliveries come meanwhile
        await asyncio.wait_for(six.wait(), 20)
        (written,) = writes  # in one write
        assert [int(s) for s in re.findall(rb'"seq":(\d+)', written)] == [2, 3, 4, 5, 6, 7]
        assert client.sent == 7
        assert not waiting.done()  # the writer slept on

        push.accept = False
        await group(3)
        await asyncio.wait_for(waiting, 20)  # woken: the frames are in its queue
        assert await _drain(client, 10) == [8, 9, 10]
        assert len(writes) == 1
    finally:
        await hub.detach(client)
        await hub.close()


async def test_a_burst_longer_than_the_queue_reaches_a_waiting_writer_whole(nc, js, pool):
    """More frames arrive together than a client may queue: a writer waiting live whose
    connection takes them is healthy, so it gets every one, in order (not cut off)."""
    from runloom.contracts.ids import new_id

    hub, log = await _hub(js, pool, queue_size=8)
    run_id = new_id("run")
    await log.append(run_id, "t1", StepProgress(step_id="s", message="first"))
    client = await hub.attach(run_id)
    writes: list[bytes] = []

    def push(data: bytes) -> bool:
        writes.append(data)
        return True

    push.chunked = False  # type: ignore[attr-defined]
    # As the SSE writer once it has replayed seq 1 and waits live:
    client.push, client.live, client.sent = push, True, 1  # type: ignore[assignment]
    client.replaying = False
    try:
        waiting = asyncio.create_task(client.wait())
        feed = client.feed
        async with feed.lock:  # the feed is busy while 30 arrive: they come together
            steps = [StepProgress(step_id="s", message=str(i)) for i in range(30)]
            await asyncio.gather(*(log.append(run_id, "t1", p) for p in steps))
            async with asyncio.timeout(20):
                while feed.sub.pending_msgs < 29:  # type: ignore[union-attr]
                    await nc.flush()
        async with asyncio.timeout(20):
            while client.sent < 31 and not client.cut:
                await nc.flush()
        assert not client.cut
        seqs = [int(s) for s in re.findall(rb'"seq":(\d+)', b"".join(writes))]
        assert seqs == list(range(2, 32))
        assert len(writes) > 1  # held frames never exceed the queue bound: written as they fill
        assert not waiting.done()
    finally:
        await hub.detach(client)
        await hub.close()


async def test_a_subscription_that_died_silently_is_replaced(js, pool):
    from runloom.contracts import subjects
    from runloom.contracts.ids import new_id

    hub, log = await _hub(js, pool, watch_interval=0.2)
    run_id = new_id("run")
    await log.append(run_id, "t1", StepProgress(step_id="s", message="first"))
    client = await hub.attach(run_id)
    try:
        # The server forgets the consumer (as after a restart); no error reaches the client.
        consumer = client.feed.sub._consumer  # type: ignore[union-attr]
        await js.delete_consumer(subjects.RUN_EVENTS_STREAM, consumer)
        for i in range(5):
            await log.append(run_id, "t1", StepProgress(step_id="s", message=str(i)))
        assert await _drain(client, 6) == [2, 3, 4, 5, 6]
    finally:
        await hub.detach(client)
        await hub.close()


async def test_a_feed_whose_heartbeat_check_died_is_still_repaired(js, pool):
    """nats-py's own repair of an ordered consumer (`activity_check`, which resets it when
    heartbeats stop) can die, e.g. when its reset fails during a leader election. With that
    task gone and the consumer gone from the server, only the feed's watchdog is left."""
    from runloom.contracts import subjects
    from runloom.contracts.ids import new_id

    hub, log = await _hub(js, pool, watch_interval=0.2)
    run_id = new_id("run")
    await log.append(run_id, "t1", StepProgress(step_id="s", message="first"))
    client = await hub.attach(run_id)
    try:
        sub = client.feed.sub
        assert sub is not None
        check = sub._sub._jsi._hbtask  # type: ignore[attr-defined]
        assert check is not None and not check.done()  # the feed asked for heartbeats
        check.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await check
        await js.delete_consumer(subjects.RUN_EVENTS_STREAM, sub._consumer)  # type: ignore[attr-defined]
        for i in range(5):
            await log.append(run_id, "t1", StepProgress(step_id="s", message=str(i)))
        assert await _drain(client, 6) == [2, 3, 4, 5, 6]
        assert client.feed.hub.gaps_repaired >= 1  # the feed's watchdog repaired it
    finally:
        await hub.detach(client)
        await hub.close()


async def test_a_feed_that_could_not_subscribe_yet_still_hands_out_every_event(js, pool):
    """While a leader is being elected no consumer can be made: clients join the feed anyway
    (no wait for it), the watchdog hands out what the log holds, then subscribes."""
    from runloom.contracts.ids import new_id

    hub, log = await _hub(js, pool, watch_interval=0.2, subscribe_wait=0.0)
    run_id = new_id("run")
    await log.append(run_id, "t1", StepProgress(step_id="s", message="first"))
    client = await hub.attach(run_id)
    try:
        assert client.feed.sub is None  # the opening gave up on it at once
        for i in range(5):
            await log.append(run_id, "t1", StepProgress(step_id="s", message=str(i)))
        assert await _drain(client, 6) == [2, 3, 4, 5, 6]
        await asyncio.wait_for(client.feed.subscribed.wait(), 10)  # the watchdog subscribed
        await log.append(run_id, "t1", StepProgress(step_id="s", message="live"))
        assert await _drain(client, 7) == [7]
    finally:
        await hub.detach(client)
        await hub.close()
