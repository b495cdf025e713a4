"""`runtime.responder` on a real nats-server: answers, refusals, failures, bounds, replicas."""

from __future__ import annotations

import asyncio
import time
from typing import get_args

import msgspec
import pytest
from runloom.contracts import subjects
from runloom.contracts.commands import DeadLetter
from runloom.contracts.operations import UNAVAILABLE, Answerer, Operation
from runloom.runtime.request import _NOUN, RequestFailed, ask
from runloom.runtime.responder import Responder, Route

SUBJECT = "test.responder.double"
QUEUE = "responder-test"


class Double(msgspec.Struct, forbid_unknown_fields=True):
    n: int


class Doubled(msgspec.Struct):
    n: int
    by: str


DOUBLE = Operation("deliverables", "double", SUBJECT, Double, Doubled, "deliverables", "x2", 5.0)


def _error(msg) -> str:
    return (msg.headers or {}).get("Runloom-Error", "")


async def test_answers_refuses_with_a_dead_letter_and_says_unavailable(nc, js) -> None:
    seen: list[tuple[str, msgspec.Struct | None]] = []

    async def double(req: Double) -> Doubled:
        if req.n < 0:
            raise RuntimeError("the store is away")
        return Doubled(n=2 * req.n, by="a")

    responder = Responder(
        nc, js, QUEUE, [Route(DOUBLE, double)], on_outcome=lambda s, r: seen.append((s, r))
    )
    dlq = await js.subscribe(subjects.dead_letter("core", QUEUE), deliver_policy="new")
    await responder.start()
    try:
        ok = await nc.request(SUBJECT, b'{"n": 21}', timeout=5)
        assert msgspec.json.decode(ok.data, type=Doubled) == Doubled(n=42, by="a")
        assert _error(ok) == ""

        bad = await nc.request(SUBJECT, b'{"n": "many"}', timeout=5)
        assert _error(bad).startswith(f"malformed {SUBJECT} request") and "n" in _error(bad)
        assert bad.data == b""
        letter = await _letter(dlq, '{"n": "many"}')
        assert letter.subject == SUBJECT and letter.consumer == QUEUE
        assert "Expected `int`" in letter.reason

        failed = await nc.request(SUBJECT, b'{"n": -1}', timeout=5)
        assert _error(failed) == UNAVAILABLE

        # The malformed request never reached the handler; the outcomes say what did.
        assert seen == [(SUBJECT, Doubled(n=42, by="a")), (SUBJECT, None)]
    finally:
        await responder.stop()
        await dlq.unsubscribe()


def test_every_answering_service_is_named_in_failures() -> None:
    assert set(get_args(Answerer)) == set(_NOUN)


async def test_the_requester_says_why_a_request_got_no_reply(nc, js) -> None:
    """`request.ask`: the reply decoded, or one `RequestFailed` that says why and whether a
    retry may help (an unserved subject, a service that cannot serve now, a refusal)."""

    async def double(req: Double) -> Doubled:
        if req.n < 0:
            raise RuntimeError("the store is away")
        return Doubled(n=2 * req.n, by="a")

    with pytest.raises(RequestFailed) as nobody:
        await ask(nc, DOUBLE, Double(n=1), timeout_s=2)
    assert (nobody.value.why, nobody.value.retryable) == ("no_responders", True)
    assert "no deliverables replica is running" in str(nobody.value)

    responder = Responder(nc, js, QUEUE, [Route(DOUBLE, double)])
    await responder.start()
    try:
        assert await ask(nc, DOUBLE, Double(n=4)) == Doubled(n=8, by="a")
        with pytest.raises(RequestFailed) as away:
            await ask(nc, DOUBLE, Double(n=-1))
        assert (away.value.why, away.value.retryable) == ("unavailable", True)
        with pytest.raises(RequestFailed) as refused:
            await ask(nc, DOUBLE, Doubled(n=1, by="not a Double"))  # type: ignore[arg-type]
        assert (refused.value.why, refused.value.retryable) == ("refused", False)
    finally:
        await responder.stop()


async def test_replicas_share_the_work_each_within_its_bound_and_stop_drains(nc, js) -> None:
    release, full = asyncio.Event(), asyncio.Event()
    running = {"a": 0, "b": 0}
    most = {"a": 0, "b": 0}

    def handler(name: str):
        async def double(req: Double) -> Doubled:
            running[name] += 1
            most[name] = max(most[name], running[name])
            if sum(running.values()) == 4:
                full.set()
            try:
                await release.wait()
            finally:
                running[name] -= 1
            return Doubled(n=2 * req.n, by=name)

        return double

    replicas = [
        Responder(nc, js, QUEUE, [Route(DOUBLE, handler(name))], concurrency=2)
        for name in ("a", "b")
    ]
    for r in replicas:
        await r.start()
    asks = [
        asyncio.create_task(nc.request(SUBJECT, msgspec.json.encode(Double(n=i)), timeout=10))
        for i in range(40)
    ]
    await asyncio.wait_for(full.wait(), 5)
    assert running == {"a": 2, "b": 2}, "each replica takes at most its 2 requests at once"
    # Stopping a replica with requests in hand and waiting: it answers them all first.
    stopping = [asyncio.create_task(r.stop()) for r in replicas]
    release.set()
    await asyncio.wait_for(asyncio.gather(*stopping), 10)
    answers = [msgspec.json.decode((await a).data, type=Doubled) for a in asks]
    assert sorted(a.n for a in answers) == [2 * i for i in range(40)], "each answered once"
    assert most == {"a": 2, "b": 2}
    assert {a.by for a in answers} == {"a", "b"}


async def _letter(sub, payload: str) -> DeadLetter:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            m = await sub.next_msg(timeout=1)
        except TimeoutError:
            continue
        letter = msgspec.json.decode(m.data, type=DeadLetter)
        if letter.payload == payload:
            return letter
    pytest.fail(f"no dead letter for {payload}")
