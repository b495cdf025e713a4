"""The intake: subscribed run events become pending deliveries (`store.enqueue`).

Declared consumer on RUN_EVENTS (durable `webhooks`, every run's subject): it takes only the
event types an endpoint can subscribe to (the rest are acked unread, by their type header),
in batches, one transaction per batch. Idempotent: a redelivered event finds its deliveries
stored and adds nothing. A new durable starts at the stream's next event (deliver new): no
endpoint existed before the service, so the history has no one to go to. Its ack floor (every
event up to it stored or skipped) is what the dispatcher may send up to.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import msgspec
from runloom.contracts import subjects
from runloom.contracts.events import Event, payload_of
from runloom.contracts.webhooks import WEBHOOK_EVENT_TYPES, body_of
from runloom.runtime.consumer import Consumer, Delivery
from runloom.webhooks import metrics
from runloom.webhooks.access import DURABLE
from runloom.webhooks.store import Pending, Store

_encoder = msgspec.json.Encoder()


def body(event: Event) -> bytes:
    """The webhook body of a subscribable event (ValueError if its data is not its type's)."""
    cls = body_of(event.type)
    if cls is None:
        raise ValueError(f"{event.type} is not a webhook event type")
    try:
        data = payload_of(event)
    except msgspec.ValidationError as exc:
        raise ValueError(f"{event.type} {event.id}: {exc}") from exc
    return _encoder.encode(
        cls(
            type=event.type,  # type: ignore[arg-type]
            timestamp=event.time,
            event_id=event.id,
            run_id=event.run_id,
            tenant_id=event.tenant_id,
            seq=event.seq,
            data=data,
        )
    )


class Intake:
    def __init__(self, store: Store, on_enqueued: Callable[[], None] | None = None) -> None:
        self.store = store
        self.on_enqueued = on_enqueued

    def consumer(self) -> Consumer[Event]:
        return Consumer(
            stream=subjects.RUN_EVENTS_STREAM,
            durable=DURABLE,
            filter_subject=subjects.RUN_EVENTS_SUBJECTS,
            decodes=Event,
            batch_handler=self.handle,
            event_types=frozenset(WEBHOOK_EVENT_TYPES),
            batch=64,
            linger_s=0.05,
            fail_run=False,  # an event webhooks cannot shape is theirs to set apart, not the run's
            deliver_new=True,
        )

    async def handle(self, batch: Sequence[tuple[Event, Delivery]]) -> None:
        endpoints = await self.store.matching([ev.tenant_id for ev, _ in batch])
        pending: list[Pending] = []
        for ev, delivery in batch:
            targets = [
                e
                for e in endpoints
                if e.tenant_id == ev.tenant_id
                and ev.type in e.events
                and (e.run_id is None or e.run_id == ev.run_id)
            ]
            if not targets:
                continue
            raw = body(ev)
            stream_seq = delivery.msg.metadata.sequence.stream if delivery.msg.reply else 0
            pending += [
                Pending(e.id, ev.tenant_id, ev.id, ev.type, ev.run_id, ev.seq, stream_seq, raw)
                for e in targets
            ]
        stored = await self.store.enqueue(pending)
        metrics.DELIVERIES.inc(stored)
        if stored and self.on_enqueued is not None:
            self.on_enqueued()
