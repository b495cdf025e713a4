"""Webhook bodies: one documented type per subscribable event type, carrying its payload."""

from __future__ import annotations

import json

import msgspec
from runloom.contracts import codegen
from runloom.contracts.events import EVENT_TYPES, Event, data_of, payload_of
from runloom.contracts.types import now
from runloom.contracts.webhooks import WEBHOOK_BODIES, WEBHOOK_EVENT_TYPES, body_of


def test_every_subscribable_type_has_a_body_typed_by_its_payload() -> None:
    assert set(WEBHOOK_BODIES) == set(WEBHOOK_EVENT_TYPES)
    for kind, body in WEBHOOK_BODIES.items():
        fields = {f.name: f.type for f in msgspec.structs.fields(body)}
        assert fields["data"] is EVENT_TYPES[kind], kind
        assert body.__doc__, f"{body.__name__} is not documented"
    assert body_of("message.delta") is None


def test_a_body_decodes_as_its_type_and_refuses_another_types_data() -> None:
    from runloom.contracts.events import RunFailed

    event = Event(
        id="evt_1",
        run_id="run_01JD6Q0W7XKZ3T9M4N5P6R8S2V",
        tenant_id="t",
        seq=7,
        type="run.failed",
        time=now(),
        producer="x",
        data=data_of(RunFailed(error="boom", reason="internal")),
    )
    cls = WEBHOOK_BODIES["run.failed"]
    body = cls(
        type="run.failed",
        timestamp=event.time,
        event_id=event.id,
        run_id=event.run_id,
        tenant_id=event.tenant_id,
        seq=event.seq,
        data=payload_of(event),
    )
    raw = msgspec.json.encode(body)
    assert msgspec.json.decode(raw, type=cls).data == RunFailed(error="boom", reason="internal")
    wrong = json.loads(raw) | {"data": {"partial": True}}
    try:
        msgspec.json.decode(json.dumps(wrong), type=cls)
    except msgspec.ValidationError as exc:
        assert "error" in str(exc)
    else:
        raise AssertionError("a run.failed body without `error` decoded")


def test_bodies_are_generated_as_json_schema_and_asyncapi_messages() -> None:
    files = codegen.render()
    doc = json.loads(files["asyncapi.json"])
    for body in WEBHOOK_BODIES.values():
        schema = json.loads(files[f"schemas/webhooks/{body.__name__}.json"])
        assert schema["$defs"][body.__name__]["properties"]["event_id"]["description"]
        assert body.__name__ in doc["channels"]["webhookDelivery"]["messages"]
    assert "webhooks.endpoint.create" in {c["address"] for c in doc["channels"].values()}
