"""NATS SIGKILLed while deliveries wait for their retry: the stored deliveries still go out,
and events appended after it comes back are delivered after them, in order, nothing lost."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from runloom.contracts.events import RunCompleted, RunCreated, RunStarted
from runloom.contracts.ids import new_id
from runloom.contracts.webhooks import ListDeliveriesRequest
from runloom.devkit.receiver import WebhookReceiver, in_order_once, verified
from runloom.runtime.eventlog import EventLog

from .test_delivery import register


async def append_surely(log: EventLog, run_id: str, tenant: str, payload: Any) -> Any:
    """Append, trying again while the server comes back (bounded)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return await log.append(run_id, tenant, payload, check_existing=True)
        except Exception:
            assert time.monotonic() < deadline, "could not append for 30 s"
            await asyncio.sleep(0.2)


async def test_nats_killed_mid_backoff_loses_nothing(js, servers, running) -> None:
    failing = True
    async with WebhookReceiver(answer=lambda n: 503 if failing else 204) as receiver:
        hook = await register(running, receiver.url)
        log = EventLog(js, "test/webhooks", publish_timeout=1.0)
        runs = [new_id("run") for _ in range(2)]
        sent: dict[str, list[int]] = {r: [] for r in runs}
        for payload in (RunCreated(question="q"), RunStarted(worker="w")):
            for run_id in runs:
                sent[run_id].append((await log.append(run_id, running.tenant, payload)).seq)
        # Every delivery stored, each run's first tried and failed, and the dispatcher knows the
        # intake is past all four (so they may go while NATS is away):
        last = (await js.stream_info("RUN_EVENTS")).state.last_seq
        request = ListDeliveriesRequest(tenant_id=running.tenant, endpoint_id=hook.endpoint.id)
        deadline = time.monotonic() + 20
        while True:
            listed = (await running.management.deliveries(request)).deliveries
            tried = sum(d.attempts >= 1 for d in listed)
            if len(listed) == 4 and tried >= 2 and running.dispatcher.floor >= last:
                break
            assert time.monotonic() < deadline, (listed, running.dispatcher.floor, last)
            await asyncio.sleep(0.05)
        servers.nats.kill()
        try:
            failing = False
            # NATS is away: what was stored before still goes out (from PostgreSQL).
            await receiver.wait_for(lambda r: len(r.ids()) == 4, timeout=20)
        finally:
            servers.nats.start()
        for run_id in runs:
            event = await append_surely(log, run_id, running.tenant, RunCompleted())
            sent[run_id].append(event.seq)
        await receiver.wait_for(lambda r: len(r.ids()) == 6, timeout=40)
        assert in_order_once(receiver, verified(receiver, [hook.secret])) == sent
