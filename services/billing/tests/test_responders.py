"""Bad requests get a clear answer at once and are dead-lettered with the reason."""

from __future__ import annotations

import time

import msgspec
from runloom.contracts import subjects
from runloom.contracts.commands import DeadLetter


async def test_malformed_reserve_is_answered_and_dead_lettered(billing, nc, js):
    dlq = subjects.dead_letter("core", "billing")
    sub = await js.subscribe(dlq, deliver_policy="new")
    msg = await nc.request(subjects.BILLING_RESERVE, b'{"reservation_id": 7}', timeout=5)
    error = (msg.headers or {}).get("Runloom-Error", "")
    assert error.startswith("malformed billing.reserve request")
    assert "reservation_id" in error

    deadline = time.monotonic() + 10
    letter = None
    while letter is None and time.monotonic() < deadline:
        try:
            m = await sub.next_msg(timeout=1)
        except TimeoutError:
            continue
        candidate = msgspec.json.decode(m.data, type=DeadLetter)
        if candidate.payload == '{"reservation_id": 7}':
            letter = candidate
    await sub.unsubscribe()
    assert letter is not None
    assert letter.subject == subjects.BILLING_RESERVE and "reservation_id" in letter.reason
