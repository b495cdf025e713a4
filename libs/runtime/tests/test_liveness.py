"""No silent stop: a consumer or responder that stops taking waiting work is re-created, and
/readyz says so meanwhile. Against the real nats-server: the faults are real subscriptions
killed, a delivery task ended, a durable deleted on the server, and rights the server's
authorization refuses (then grants, by a configuration reload)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import msgspec
import nats.errors
import pytest
from nats.js import api as js_api
from prometheus_client import REGISTRY
from runloom.contracts.operations import Operation
from runloom.devkit.embedded import NatsServer, free_port
from runloom.runtime import access, bus
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


async def until(
    condition: Callable[[], Awaitable[bool]], what: str, within: float = DEADLINE_S
) -> None:
    """Poll `condition` until true, failing after `within` seconds."""
    deadline = time.monotonic() + within
    while not await condition():
        assert time.monotonic() < deadline, f"not within {within}s: {what}"
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

    def __init__(self, js: Any, ack_wait_s: float = 30.0) -> None:
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
            ack_wait_s=ack_wait_s,
            liveness_every_s=0.5,
            liveness_strikes=2,
        )
        self.stop = asyncio.Event()

    async def handle(self, body: dict[str, int], _delivery: Any) -> None:
        self.handled.append(body["n"])

    async def publish(self, *ns: int) -> None:
        for n in ns:
            await self.js.publish(self.subject, b'{"n": %d}' % n)

    async def all_handled(self, *ns: int, within: float = DEADLINE_S) -> None:
        async def done() -> bool:
            return set(ns) <= set(self.handled)

        await until(done, f"messages {ns} handled (handled: {self.handled})", within)


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


async def test_a_consumer_whose_fetches_go_unanswered_fails_with_no_work_waiting(
    nc: Any, work: Work, readyz: Any
) -> None:
    """Nothing waits, yet its fetches go unanswered (its inbox unsubscribed underneath): it
    fails once the liveness window passes, and is alive again once re-created."""
    label = f"consumer {work.consumer.name}"
    await work.publish(1)
    await work.all_handled(1)
    before = recreations("consumer", work.consumer.name, "unanswered")
    (inbox,) = [
        sub
        for sub in list(nc._subs.values())
        if sub._cb is None and sub.subject.startswith(nc._inbox_prefix.decode())
    ]
    await inbox.unsubscribe()

    await saw_failing(readyz, label, "unanswered")
    await ready_again(readyz)
    assert recreations("consumer", work.consumer.name, "unanswered") == before + 1
    await work.publish(2)
    await work.all_handled(2)


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


# -- refused by permission -----------------------------------------------------------------
#
# A service whose NATS identity lacks a right never sees an error it could raise: the server
# drops what it refuses, sends an asynchronous `-ERR` and keeps the connection; requests go
# unanswered, a subscription receives nothing. Against a nats-server of the test's own with
# authentication: a client under an identity lacking the right, then the server's
# configuration reloaded with the right granted (what an operator does), with no restart of
# the consumer or responder.

LONGER_S = 45.0
"""The refused tests' deadline: a reload and a retry after pauses come first."""


@dataclass(frozen=True, kw_only=True)
class Lacking(access.Identity):
    """An identity whose permissions lack the publish rights starting with `lacks`."""

    lacks: tuple[str, ...] = ()

    def permissions(self) -> access.Permissions:
        p = super().permissions()
        kept = tuple(s for s in p.publish if not s.startswith(self.lacks))
        return replace(p, publish=kept)


class Bus:
    """A nats-server with authentication: `admin` and one identity `probe` whose declaration
    the test changes (`grant`: the configuration rewritten and reloaded)."""

    def __init__(self, root: Path) -> None:
        self.secrets = root / "secrets"
        self.probe: access.Identity = access.Identity(name="probe")
        self.server = NatsServer(root / "nats", free_port(), authorization=self._block())
        self.clients: list[Any] = []

    def _block(self) -> str:
        identities = [access.ADMIN, self.probe]
        return access.render_users(identities, access.ensure_all(self.secrets, identities))

    def grant(self, probe: access.Identity) -> None:
        self.probe = probe
        self.server.authorization = self._block()
        self.server.reload()

    async def connect(self, identity: str) -> Any:
        cred = access.seed_path(self.secrets, identity)
        client = await bus.connect(self.server.url, f"test-{identity}", credentials=cred)
        self.clients.append(client)
        return client


@pytest.fixture
async def auth_bus(tmp_path: Path) -> AsyncIterator[Bus]:
    b = Bus(tmp_path)
    b.server.start()
    try:
        yield b
    finally:
        for client in b.clients:
            with contextlib.suppress(Exception):
                await client.close()
        b.server.stop()


async def refused_on_readyz(readyz: Any, label: str, subject: str) -> str:
    """/readyz 503 with `label` failing for a permission naming `subject`: the reason shown."""
    shown: list[str] = []

    async def refused() -> bool:
        status, checks = await readyz()
        shown[:] = [checks.get(label, "")]
        return status == 503 and shown[0].startswith("stalled: refused: ") and subject in shown[0]

    await until(refused, f"/readyz reports {label} refused for {subject}", LONGER_S)
    return shown[0]


@pytest.mark.parametrize("lacking", ["every_right", "fetch", "ack"])
async def test_a_consumer_refused_by_permission_fails_liveness_and_recovers_once_granted(
    auth_bus: Bus, readyz: Any, lacking: str
) -> None:
    admin = (await auth_bus.connect("admin")).jetstream()
    # admin publishes; the consumer is served as `probe` (what it handled unacknowledged
    # comes again after 3 s)
    work = Work(admin, ack_wait_s=3.0)
    consumer, stream = work.consumer, work.stream
    await admin.add_stream(js_api.StreamConfig(name=stream, subjects=[f"{stream.lower()}.>"]))
    allowed = access.Identity(name="probe", consumes=(access.Durable(stream, "d"),))
    refused = {
        "every_right": "$JS.API.CONSUMER.",
        "fetch": f"$JS.API.CONSUMER.MSG.NEXT.{stream}.d",  # created and inspected, not fetched
        "ack": f"$JS.ACK.{stream}.d.",  # fetched and handled, never acknowledged
    }[lacking]
    if lacking != "every_right":
        await admin.add_consumer(stream, consumer.config())
        auth_bus.grant(Lacking(name="probe", consumes=allowed.consumes, lacks=(refused,)))
    await work.publish(1, 2, 3)
    label = f"consumer {consumer.name}"
    before = recreations("consumer", consumer.name, "refused")

    probe = (await auth_bus.connect("probe")).jetstream(timeout=2.0)
    task = asyncio.create_task(serve(consumer, probe, work.stop))
    try:
        shown = await refused_on_readyz(readyz, label, refused)
        assert "permissions violation" in shown and "NATS identity" in shown, shown
        assert f".{stream}.d" in shown, shown
        if lacking != "ack":
            assert work.handled == []

        auth_bus.grant(allowed)  # the operator adds the right; nothing is restarted

        await work.all_handled(1, 2, 3, within=LONGER_S)
        await ready_again(readyz)
        assert (await readyz())[1][label] == "ok"
        assert recreations("consumer", consumer.name, "refused") == before + 1
        await work.publish(4)
        await work.all_handled(4)

        async def all_acked() -> bool:  # what was handled unacknowledged comes again
            info = await admin.consumer_info(stream, "d")
            return info.num_pending == 0 and info.num_ack_pending == 0

        await until(all_acked, "every message acknowledged", LONGER_S)
    finally:
        work.stop.set()
        await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 10)


async def test_a_responder_refused_its_subscription_fails_liveness_and_answers_once_granted(
    auth_bus: Bus, readyz: Any
) -> None:
    subject = f"test.refused.{uuid.uuid4().hex[:8]}"
    queue = "refused-responder"

    async def echo(req: Echo) -> Echo:
        return req

    echoing = Operation("deliverables", "echo", subject, Echo, Echo, "deliverables", "echo", 1.0)
    requester = await auth_bus.connect("admin")
    probe = await auth_bus.connect("probe")
    before = recreations("responder", queue, "refused")
    responder = Responder(
        probe, probe.jetstream(), queue, [Route(echoing, echo)], liveness_every_s=0.5
    )
    await responder.start()
    try:
        shown = await refused_on_readyz(readyz, f"responder {queue}", subject)
        assert "permissions violation for subscription" in shown, shown
        assert "NATS identity" in shown, shown
        assert not await _answered(requester, subject, 1)

        auth_bus.grant(access.Identity(name="probe", serves=(subject,), queue=queue))

        async def answers() -> bool:
            return await _answered(requester, subject, 2)

        await until(answers, "the responder answers once granted", LONGER_S)

        await ready_again(readyz)
        assert recreations("responder", queue, "refused") == before + 1
    finally:
        await responder.stop()
