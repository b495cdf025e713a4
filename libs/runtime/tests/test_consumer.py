"""The declared consumer's loop (`runtime.consumer.serve`) against a real nats-server."""

from __future__ import annotations

import asyncio
import time
import uuid

from nats.js import api as js_api
from runloom.runtime.consumer import Consumer, serve


async def test_a_batch_consumer_lingers_after_a_short_batch_and_stops_at_once(js):
    """After a batch short of its size the consumer waits `linger_s` before fetching again:
    what comes meanwhile arrives as one batch. Asked to stop while it waits, it stops at once."""
    name = f"LINGER_{uuid.uuid4().hex[:8].upper()}"
    subject = f"{name.lower()}.x"
    await js.add_stream(js_api.StreamConfig(name=name, subjects=[f"{name.lower()}.>"]))
    batches: list[list[int]] = []
    handled = asyncio.Event()

    async def handle(items):
        batches.append([body["n"] for body, _ in items])
        handled.set()

    consumer = Consumer(
        stream=name,
        durable="d",
        filter_subject=f"{name.lower()}.>",
        decodes=dict,
        batch_handler=handle,
        batch=50,
        linger_s=2.0,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(serve(consumer, js, stop))
    try:
        await js.publish(subject, b'{"n": 0}')
        await asyncio.wait_for(handled.wait(), 10)
        handled.clear()
        for n in range(1, 6):  # while it lingers after a batch of one
            await js.publish(subject, b'{"n": %d}' % n)
        await asyncio.wait_for(handled.wait(), 10)
        assert batches == [[0], [1, 2, 3, 4, 5]]
        async with asyncio.timeout(10):  # the acks follow the handler: ask until they are in
            while (info := await js.consumer_info(name, "d")).num_ack_pending:
                pass
        assert info.num_pending == 0 and info.num_redelivered == 0
        stopped = time.monotonic()
        stop.set()  # it lingers again (5 < 50): stopping does not wait that out
        await asyncio.wait_for(task, 10)
        assert time.monotonic() - stopped < 1.0
    finally:
        stop.set()
        await asyncio.gather(task, return_exceptions=True)
        await js.delete_stream(name)
