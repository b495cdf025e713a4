"""`runtime.retry.Backoff`: the pauses each retry loop takes, as they were written by hand."""

from __future__ import annotations

import random

from runloom.runtime.consumer import REDELIVERY
from runloom.runtime.eventlog import AWAY, CONFLICT
from runloom.runtime.retry import Backoff


def test_exponential_capped_with_jitter() -> None:
    b = Backoff(first_s=0.1, max_s=2.0, jitter=0.2)
    for n, plain in enumerate([0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0]):
        assert all(0.8 * plain <= b.delay(n) <= 1.2 * plain for _ in range(50))
    assert Backoff(first_s=0.1, max_s=2.0).delay(5000) == 2.0  # no overflow after long outages


def test_the_schedules_of_the_event_log_and_the_consumer() -> None:
    assert [AWAY.delay(n) for n in (0, 1, 2, 18, 19, 500)] == [
        min(0.05 * (n + 1), 1.0) for n in (0, 1, 2, 18, 19, 500)
    ]
    assert [REDELIVERY.delay(d) for d in (1, 2, 5, 6, 7, 100)] == [
        min(30.0, 0.5 * 2 ** min(d, 6)) for d in (1, 2, 5, 6, 7, 100)
    ]
    random.seed(7)
    for attempt in (0, 1, 5, 10, 40):
        pauses = [CONFLICT.delay(attempt) for _ in range(200)]
        top = 0.002 * min(attempt, 10)
        assert all(0 <= p <= top for p in pauses)
        assert attempt == 0 or max(pauses) > 0.8 * top  # spread over the whole range
