"""The webhooks service in process (intake + dispatcher + management) on the session's
servers, with retries in fractions of a second."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from runloom.runtime import consumer
from runloom.runtime.retry import Backoff
from runloom.webhooks.dispatcher import Dispatcher, DispatchOptions
from runloom.webhooks.egress import EgressPolicy
from runloom.webhooks.intake import Intake
from runloom.webhooks.responders import Management
from runloom.webhooks.sender import Sender
from runloom.webhooks.store import RetryPolicy, Store


@dataclass
class Running:
    store: Store
    management: Management
    tenant: str
    stop: asyncio.Event
    dispatcher: Dispatcher


def fast_retry(**kw: Any) -> RetryPolicy:
    return RetryPolicy(backoff=Backoff(first_s=0.05, max_s=0.4, jitter=0.5), **kw)


@contextlib.asynccontextmanager
async def serving(
    js: Any, pool: Any, retry: RetryPolicy, tenant: str | None = None
) -> AsyncIterator[Running]:
    """One replica of the service in this process (`tenant`: the test's, made up if None)."""
    policy = EgressPolicy(allow_local=True)
    store = Store(pool, retry)
    sender = Sender(policy, timeout_s=5)
    dispatcher = Dispatcher(store, sender, js, DispatchOptions(poll_s=0.05))
    intake = Intake(store, on_enqueued=dispatcher.wake.set)
    stop = asyncio.Event()
    await consumer.ensure(js, intake.consumer())  # as the service does before it takes requests
    tasks = [
        asyncio.create_task(consumer.serve(intake.consumer(), js, stop)),
        asyncio.create_task(dispatcher.run(stop)),
    ]
    tenant = tenant or f"t-{uuid.uuid4().hex[:10]}"
    running = Running(store, Management(store, policy), tenant, stop, dispatcher)
    try:
        yield running
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=10)
        await sender.close()
        # Nothing of this test's tenant is left pending for a later test's service to try.
        await pool.execute("DELETE FROM webhook_endpoints WHERE tenant_id = $1", running.tenant)


@pytest.fixture
async def running(js: Any, pool: Any) -> AsyncIterator[Running]:
    async with serving(js, pool, fast_retry()) as r:
        yield r
