"""Provider limits shared by two replicas: together they stay within the key's rate, and a run
over it waits visibly (rate_limited) instead of calling."""

from __future__ import annotations

import time

import pytest
from runloom.orchestrator.provider_limits import key_of

QUESTION = "How are exceptions raised and handled with try and except?"


@pytest.mark.orch_options(provider_rpm=60.0)
async def test_two_replicas_share_one_request_rate(start_orchestrator, driver, pool) -> None:
    key = f"{key_of('offline', '')}:requests"
    # An empty bucket (the key's minute already spent): one call a second from here on.
    await pool.execute(
        "INSERT INTO provider_buckets(key, tokens, at, ok) VALUES ($1, 0, clock_timestamp(), true)"
        " ON CONFLICT (key) DO UPDATE SET tokens=0, at=clock_timestamp()",
        key,
    )
    async with start_orchestrator(), start_orchestrator():
        began = time.monotonic()
        runs = [await driver.run(QUESTION, deliverables=[]) for _ in range(2)]
        histories = [await driver.finished(r, timeout=90) for r in runs]
        took = time.monotonic() - began
    calls = [
        e
        for h in histories
        for e in h
        if e.type == "usage.recorded" and e.data["kind"] == "provider"
    ]
    waits = [e for h in histories for e in h if e.type == "rate_limited"]
    assert all(h[-1].type == "run.completed" for h in histories)
    assert len(calls) >= 3
    # 1 request/s for both replicas together, from an empty bucket: n calls take n seconds at
    # least, whichever replica made them.
    assert took >= len(calls) * 0.9, (len(calls), took)
    assert waits and all(0 < e.data["retry_after_s"] <= 1.5 for e in waits)
    assert {e.data["provider"] for e in waits} == {"offline"}
