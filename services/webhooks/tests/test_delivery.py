"""Delivery against a real local receiver: every subscribed event of every run, verified by
`standardwebhooks`, in seq order per run, each webhook-id once after dedup, through failures;
secret rotation; giving up, redelivery and disabling, each visible in the listings."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from runloom.contracts.events import RunCompleted, RunCreated, RunStarted, StepStarted
from runloom.contracts.ids import new_id
from runloom.contracts.webhooks import (
    WEBHOOK_EVENT_TYPES,
    CreateWebhookRequest,
    EnableWebhookRequest,
    ListDeliveriesRequest,
    ListWebhooksRequest,
    RedeliverRequest,
    RotateWebhookSecretRequest,
)
from runloom.devkit.receiver import WebhookReceiver, in_order_once, verified
from runloom.runtime.eventlog import EventLog

from .conftest import fast_retry, serving


async def register(running: Any, url: str, events: Any = WEBHOOK_EVENT_TYPES) -> Any:
    reply = await running.management.create(
        CreateWebhookRequest(
            tenant_id=running.tenant, endpoint_id=new_id("whk"), url=url, events=list(events)
        )
    )
    assert reply.refused is None, reply.detail
    return reply


async def all_delivered(running: Any, endpoint_id: str, count: int) -> list[Any]:
    """The endpoint's deliveries once `count` are recorded delivered (a receiver sees a request
    a moment before the sender records its answer)."""
    request = ListDeliveriesRequest(tenant_id=running.tenant, endpoint_id=endpoint_id)
    deadline = time.monotonic() + 20
    while True:
        listed = await running.management.deliveries(request)
        assert listed.found
        if sum(d.status == "delivered" for d in listed.deliveries) == count:
            assert len(listed.deliveries) == count
            return list(listed.deliveries)
        assert time.monotonic() < deadline, listed
        await asyncio.sleep(0.05)


async def runs(js: Any, tenant: str, count: int) -> dict[str, list[Any]]:
    """`count` runs, their events appended interleaved; each run's events by seq."""
    log = EventLog(js, "test/webhooks")
    ids = [new_id("run") for _ in range(count)]
    out: dict[str, list[Any]] = {r: [] for r in ids}
    for payload in (
        RunCreated(question="q"),
        RunStarted(worker="w"),
        StepStarted(step_id="s1"),  # not subscribable: never delivered
        RunCompleted(summary="done"),
    ):
        for run_id in ids:
            out[run_id].append(await log.append(run_id, tenant, payload))
    return out


async def test_a_failing_receiver_gets_every_event_verified_in_order_once(js, running) -> None:
    async with WebhookReceiver(fail_first=5) as receiver, WebhookReceiver() as ends:
        everything = await register(running, receiver.url)
        completed = await register(running, ends.url, ["run.completed"])
        history = await runs(js, running.tenant, 3)
        expected = {e.id for events in history.values() for e in events if e.type != "step.started"}
        await receiver.wait_for(lambda r: r.ids() == expected, timeout=30)
        await ends.wait_for(lambda r: len(r.ids()) == len(history), timeout=30)

        bodies = verified(receiver, [everything.secret])
        assert receiver.requests[0].status == 503 and len(receiver.requests) > len(expected)
        for run_id, seqs in in_order_once(receiver, bodies).items():
            assert seqs == [e.seq for e in history[run_id] if e.type != "step.started"]
        done = verified(ends, [completed.secret])
        assert {b["event_id"] for b in done} == {events[-1].id for events in history.values()}
        assert done[0]["type"] == "run.completed" and done[0]["data"] == {"summary": "done"}

        listed = await all_delivered(running, everything.endpoint.id, len(expected))
        assert max(d.attempts for d in listed) > 1


async def test_during_a_rotation_both_secrets_verify_and_after_it_only_the_new(js, running) -> None:
    async with WebhookReceiver() as receiver:
        created = await register(running, receiver.url, ["run.created"])
        rotated = await running.management.rotate(
            RotateWebhookSecretRequest(
                tenant_id=running.tenant, endpoint_id=created.endpoint.id, grace_s=3600
            )
        )
        assert rotated.secret and rotated.secret != created.secret
        assert rotated.endpoint.previous_secret_expires_at is not None
        await runs(js, running.tenant, 1)
        await receiver.wait_for(lambda r: len(r.ids()) == 1, timeout=20)
        verified(receiver, [created.secret])  # the old secret still verifies
        verified(receiver, [rotated.secret])  # and so does the new one

        final = await running.management.rotate(
            RotateWebhookSecretRequest(
                tenant_id=running.tenant, endpoint_id=created.endpoint.id, grace_s=0
            )
        )
        await runs(js, running.tenant, 1)
        await receiver.wait_for(lambda r: len(r.ids()) == 2, timeout=20)
        last = receiver.delivered()[-1]
        assert len(last.headers["webhook-signature"].split(" ")) == 1
        last_only = WebhookReceiver(requests=[last])
        verified(last_only, [final.secret])
        try:
            verified(last_only, [rotated.secret, created.secret])
        except AssertionError:
            pass
        else:
            raise AssertionError("a rotated-out secret still verifies after its grace period")


async def test_out_of_retries_a_delivery_fails_visibly_and_redelivery_sends_it(js, pool) -> None:
    async with (
        serving(js, pool, fast_retry(retry_for_s=0.5)) as running,
        WebhookReceiver(answer=lambda n: 500 if n < 1000 else 200) as receiver,
    ):
        created = await register(running, receiver.url, ["run.created"])
        await runs(js, running.tenant, 1)
        deadline = time.monotonic() + 20
        while True:
            listed = await running.management.deliveries(
                ListDeliveriesRequest(tenant_id=running.tenant, endpoint_id=created.endpoint.id)
            )
            if listed.deliveries and listed.deliveries[0].status == "failed":
                break
            assert time.monotonic() < deadline, listed
            await asyncio.sleep(0.05)
        failed = listed.deliveries[0]
        assert failed.attempts >= 2 and failed.response_status == 500
        assert failed.last_error and "500" in failed.last_error
        receiver.answer = None  # now it answers 204
        again = await running.management.redeliver(
            RedeliverRequest(
                tenant_id=running.tenant, endpoint_id=created.endpoint.id, delivery_id=failed.id
            )
        )
        assert again.delivery is not None and again.delivery.status == "pending"
        await receiver.wait_for(lambda r: r.ids() == {failed.event_id}, timeout=20)
        verified(receiver, [created.secret])


async def test_an_endpoint_failing_for_long_is_disabled_with_the_reason(js, pool) -> None:
    async with (
        serving(js, pool, fast_retry(disable_after_s=0.3)) as running,
        WebhookReceiver(fail_first=10**6, fail_status=502) as receiver,
    ):
        created = await register(running, receiver.url, ["run.created", "run.started"])
        await runs(js, running.tenant, 1)
        deadline = time.monotonic() + 20
        while True:
            [endpoint] = (
                await running.management.list(ListWebhooksRequest(tenant_id=running.tenant))
            ).endpoints
            if endpoint.status == "disabled":
                break
            assert time.monotonic() < deadline, endpoint
            await asyncio.sleep(0.05)
        assert endpoint.id == created.endpoint.id
        assert endpoint.disabled_reason and "502" in endpoint.disabled_reason
        tried = len(receiver.requests)
        await asyncio.sleep(0.5)  # a disabled endpoint gets nothing more (nothing to await)
        assert len(receiver.requests) == tried

        receiver.fail_first = 0  # the endpoint is fixed: enabled again, what waited goes
        enabled = await running.management.enable(
            EnableWebhookRequest(tenant_id=running.tenant, endpoint_id=created.endpoint.id)
        )
        assert enabled.endpoint.status == "enabled" and enabled.endpoint.disabled_reason is None
        await receiver.wait_for(lambda r: len(r.ids()) == 2, timeout=20)
        assert [b["type"] for b in verified(receiver, [created.secret])] == [
            "run.created",
            "run.started",
        ]


async def test_settled_deliveries_are_forgotten_after_their_time_pending_ones_never(
    js, pool, running
) -> None:
    async with WebhookReceiver(answer=lambda n: 204 if n == 0 else 503) as receiver:
        created = await register(running, receiver.url, ["run.created"])
        await runs(js, running.tenant, 2)  # the first is delivered, the second keeps failing
        request = ListDeliveriesRequest(tenant_id=running.tenant, endpoint_id=created.endpoint.id)
        deadline = time.monotonic() + 20
        while True:
            listed = (await running.management.deliveries(request)).deliveries
            if sorted(d.status for d in listed) == ["delivered", "pending"] and all(
                d.attempts for d in listed
            ):
                break
            assert time.monotonic() < deadline, listed
            await asyncio.sleep(0.05)
        await pool.execute(
            "UPDATE webhook_deliveries SET created_at = created_at - interval '30 days'"
            " WHERE endpoint_id = $1",
            created.endpoint.id,
        )
        assert await running.store.forget(14 * 86400.0) == 1
        [left] = (await running.management.deliveries(request)).deliveries
        assert left.status == "pending"


async def test_two_replicas_share_the_work_in_order_and_send_each_event_once(js, pool) -> None:
    async with (
        serving(js, pool, fast_retry()) as one,
        serving(js, pool, fast_retry(), tenant=one.tenant) as two,
        WebhookReceiver(answer=lambda n: 503 if n % 3 == 0 else 204) as receiver,
    ):
        created = await register(one, receiver.url)
        history = await runs(js, one.tenant, 4)
        expected = {e.id for events in history.values() for e in events if e.type != "step.started"}
        await receiver.wait_for(lambda r: r.ids() == expected, timeout=40)
        got = in_order_once(receiver, verified(receiver, [created.secret]))
        assert got == {
            run_id: [e.seq for e in events if e.type != "step.started"]
            for run_id, events in history.items()
        }
        # Leased, never sent twice at once: each event was answered 2xx exactly once.
        assert len(receiver.delivered()) == len(expected)
        await all_delivered(two, created.endpoint.id, len(expected))
