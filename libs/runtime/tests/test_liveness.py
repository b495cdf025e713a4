"""No silent stop: a consumer or responder that stops taking waiting work is re-created, and
/readyz says so meanwhile. Against the real nats-server: the faults are real subscriptions
killed, a delivery task ended and a durable deleted on the server."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import msgspec
import nats.errors
import pytest
from nats.js import api as js_api
from prometheus_client import REGISTRY
from runloom.contracts.operations import Operation
from runloom.runtime.consumer import Consumer, serve
from runloom.runtime.management import ManagementServer
from runloom.runtime.responder import Responder, Route

DEADLINE_S = 20.0


@pytest.fixture
async def readyz() -> AsyncIterator[Callable[[], Awaitable[tuple[int, dict[str, str]]]]]:
    """This process's management port: (status, checks) of /readyz."""
    server = ManagementServer("127.0.0.1", 0)
    await server.start()
    server.started = True

    async def get() -> tuple[int, dict[str, str]]:
        async with httpx.AsyncClient() as client:
            r = await client.get(f"http://127.0.0.1:{server.port}/readyz", timeout=2)
        return r.status_code, r.json()["checks"]

    try:
        yield get
    finally:
        await server.close()


def recreations(kind: str, name: str, reason: str) -> float:
    labels = {"kind": kind, "name": name, "reason": reason}
    return REGISTRY.get_sample_value("runloom_subscription_recreations_total", labels) or 0.0


async def until(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll `condition` until true, failing after DEADLINE_S."""
    deadline = time.monotonic() + DEADLINE_S
    while not await condition():
        assert time.monotonic() < deadline, f"not within {DEADLINE_S}s: {what}"
        await asyncio.sleep(0.05)


async def saw_failing(readyz: Any, label: str, reason: str) -> None:
    async def failing() -> bool:
        status, checks = await readyz()
        return status == 503 and checks.get(label, "").startswith(f"stalled: {reason}")

    await until(failing, f"/readyz reports {label} {reason}")


async def ready_again(readyz: Any) -> None:
    async def ready() -> bool:
        return (await readyz())[0] == 200

    await until(ready, "/readyz 200 again")


class Work:
    """A stream and a consumer on it that records what it handled."""

    def __init__(self, js: Any) -> None:
        self.js = js
        self.stream = f"LIVE_{uuid.uuid4().hex[:8].upper()}"
        self.subject = f"{self.stream.lower()}.x"
        self.handled: list[int] = []
        self.consumer = Consumer(
            stream=self.stream,
            durable="d",
            filter_subject=f"{self.stream.lower()}.>",
            decodes=dict,
            handler=self.handle,
            liveness_every_s=0.5,
            liveness_strikes=2,
        )
        self.stop = asyncio.Event()

    async def handle(self, body: dict[str, int], _delivery: Any) -> None:
        self.handled.append(body["n"])

    async def publish(self, *ns: int) -> None:
        for n in ns:
            await self.js.publish(self.subject, b'{"n": %d}' % n)

    async def all_handled(self, *ns: int) -> None:
        async def done() -> bool:
            return set(ns) <= set(self.handled)

        await until(done, f"messages {ns} handled (handled: {self.handled})")


@pytest.fixture
async def work(js: Any) -> AsyncIterator[Work]:
    w = Work(js)
    await js.add_stream(js_api.StreamConfig(name=w.stream, subjects=[f"{w.stream.lower()}.>"]))
    task = asyncio.create_task(serve(w.consumer, js, w.stop))
    try:
        yield w
    finally:
        w.stop.set()
        await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 10)
        await js.delete_stream(w.stream)


@pytest.mark.parametrize("fault", ["stalled", "deleted"])
async def test_a_consumer_that_stops_taking_work_is_recreated_and_work_resumes(
    nc: Any, js: Any, work: Work, readyz: Any, fault: str
) -> None:
    label = f"consumer {work.consumer.name}"
    await work.publish(1)
    await work.all_handled(1)
    assert (await readyz())[1][label] == "ok"
    before = recreations("consumer", work.consumer.name, fault)

    if fault == "stalled":
        # The pull subscription's inbox, unsubscribed underneath the consumer: its fetches
        # are answered to nobody, and it keeps asking.
        inboxes = [
            sub
            for sub in list(nc._subs.values())
            if sub._cb is None and sub.subject.startswith(nc._inbox_prefix.decode())
        ]
        assert len(inboxes) == 1, [s.subject for s in inboxes]
        await inboxes[0].unsubscribe()
    else:  # the durable deleted on the server
        await js.delete_consumer(work.stream, work.consumer.durable)
    await work.publish(2, 3, 4)

    await saw_failing(readyz, label, fault)
    await work.all_handled(2, 3, 4)
    await ready_again(readyz)
    assert recreations("consumer", work.consumer.name, fault) == before + 1
    # A durable made anew starts at the stream's first message (the handlers are idempotent):
    # work already done may come again, none is missing.
    assert sorted(set(work.handled)) == [1, 2, 3, 4]
    if fault == "stalled":
        assert sorted(work.handled) == [1, 2, 3, 4]
    info = await js.consumer_info(work.stream, work.consumer.durable)
    assert info.num_pending == 0


class Echo(msgspec.Struct):
    n: int


async def _answered(nc: Any, subject: str, n: int) -> bool:
    """One request; True when answered (a stalled responder leaves it unanswered)."""
    try:
        reply = await nc.request(subject, msgspec.json.encode(Echo(n)), timeout=0.5)
    except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
        return False
    return bool(msgspec.json.decode(reply.data, type=Echo).n == n)


@pytest.mark.parametrize("fault", ["unsubscribed", "delivery_task_ended"])
async def test_a_responder_whose_subscription_dies_is_recreated_and_answers_again(
    nc: Any, js: Any, readyz: Any, fault: str
) -> None:
    subject = f"test.liveness.{uuid.uuid4().hex[:8]}"
    queue = f"liveness-{fault}"

    async def echo(req: Echo) -> Echo:
        return req

    echoing = Operation("deliverables", "echo", subject, Echo, Echo, "deliverables", "echo", 1.0)
    responder = Responder(nc, js, queue, [Route(echoing, echo)], liveness_every_s=0.5)
    await responder.start()
    try:
        assert await _answered(nc, subject, 1)
        before = recreations("responder", queue, fault)
        (sub,) = [s for s in nc._subs.values() if s.subject == subject]
        if fault == "unsubscribed":
            await sub.unsubscribe()
        else:  # nats-py's task that hands this subscription's messages to the callback dies
            sub._wait_for_msgs_task.cancel()
            await asyncio.gather(sub._wait_for_msgs_task, return_exceptions=True)
        assert not await _answered(nc, subject, 2)

        await saw_failing(readyz, f"responder {queue}", fault)
        await until(lambda: _answered(nc, subject, 3), "the responder answers again")
        await ready_again(readyz)
        assert recreations("responder", queue, fault) == before + 1
    finally:
        await responder.stop()
