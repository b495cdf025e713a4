"""Batches from a pull consumer (`pull.fetch`): what is there at once, else the first to come,
every message once and in order, acks as with nats-py's own fetch (real nats-server)."""

from __future__ import annotations

import asyncio
import time
import uuid

import nats.errors
import pytest
from nats.js import api as js_api
from runloom.runtime import pull


@pytest.fixture
async def stream(js):
    name = f"PULL_{uuid.uuid4().hex[:8].upper()}"
    await js.add_stream(js_api.StreamConfig(name=name, subjects=[f"{name.lower()}.>"]))
    await js.add_consumer(
        name, js_api.ConsumerConfig(durable_name="d", ack_policy=js_api.AckPolicy.EXPLICIT)
    )
    sub = await js.pull_subscribe_bind("d", name)
    yield name.lower(), sub
    await sub.unsubscribe()
    await js.delete_stream(name)


async def test_a_fetch_takes_what_is_there_at_once_up_to_the_batch(js, stream):
    subject, sub = stream
    for i in range(10):
        await js.publish(f"{subject}.x", b"%d" % i)
    first = await pull.fetch(sub, 4, timeout=10)
    started = time.monotonic()
    rest = await pull.fetch(sub, 100, timeout=10)
    assert [m.data for m in first + rest] == [b"%d" % i for i in range(10)]
    assert time.monotonic() - started < 5  # answered with what was there, not at the timeout
    for m in first + rest:
        await m.ack()


async def test_a_fetch_waits_for_the_first_message_or_times_out(js, stream):
    subject, sub = stream
    with pytest.raises(nats.errors.TimeoutError):
        await pull.fetch(sub, 8, timeout=0.5)
    waiting = asyncio.create_task(pull.fetch(sub, 8, timeout=10))
    await js.publish(f"{subject}.x", b"late")
    got = await asyncio.wait_for(waiting, 5)
    assert [m.data for m in got] == [b"late"]
    await got[0].ack()


async def test_every_message_is_fetched_once_in_order_while_they_keep_coming(js, stream):
    subject, sub = stream
    n = 600

    async def publish() -> None:
        for i in range(n):
            await js.publish(f"{subject}.x", b"%d" % i)

    publisher = asyncio.create_task(publish())
    seen: list[bytes] = []
    async with asyncio.timeout(60):
        while len(seen) < n:
            try:
                msgs = await pull.fetch(sub, 64, timeout=1)
            except nats.errors.TimeoutError:
                continue
            for m in msgs:
                seen.append(m.data)
                await m.ack_sync()  # the server has it before the consumer is asked below
    await publisher
    assert seen == [b"%d" % i for i in range(n)]
    info = await js.consumer_info(subject.upper(), "d")
    assert info.num_redelivered == 0
    assert (info.num_waiting or 0) <= 1  # no request left open (a last one for one)
    assert info.num_ack_pending == 0
