"""Every wire type survives encode -> decode, and its encoding is valid for its generated schema."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import jsonschema
import msgspec
import pytest
from runloom.contracts import codegen, commands, content, events
from runloom.contracts.ids import new_id

SCHEMAS = codegen.json_schemas()
NOW = datetime(2026, 11, 24, 3, 15, 14, 123456, tzinfo=UTC)
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TEXT = {
    "question": "How do JetStream work queues hand over a message after a consumer dies?",
    "title": "Work-queue redelivery in NATS JetStream",
    "passage": "An unacknowledged message is redelivered after the consumer's AckWait.",
    "text": "An unacknowledged message is redelivered after the consumer's AckWait expires.",
    "answer": "Focus on pull consumers and AckWait.",
    "url": "https://docs.nats.io/nats-concepts/jetstream/consumers",
    "kind": "report",
    "provider": "openai",
    "model": "gpt-4o-mini",
    "tool": "corpus.search",
    "scope": "run",
    "stream": "report",
    "producer": "orchestrator/3f2a",
    "worker": "orchestrator-2",
    "media_type": "text/markdown",
    "file_name": "report.md",
    "format": "md",
    "reason": "the source timed out after 10 s",
    "error": "HTTP 503 from the provider",
    "trace": TRACEPARENT,
    "skill": "deep_research",
    "subject": "run.run_01JD2X.events",
    "consumer": "orchestrator",
}
ID_PREFIX = {"run": "run", "event": "evt", "document": "doc", "artifact": "art", "usage": "use"}


def realistic(tp: msgspec.inspect.Type, name: str) -> Any:
    """A plausible, non-default value of a field, chosen by its type and name."""
    t = msgspec.inspect
    if isinstance(tp, t.Metadata):
        examples = (tp.extra_json_schema or {}).get("examples")
        return examples[0] if examples else realistic(tp.type, name)  # an id type's own example
    if isinstance(tp, t.UnionType):
        concrete = [x for x in tp.types if not isinstance(x, t.NoneType)]
        return realistic(concrete[0], name)
    if isinstance(tp, t.LiteralType):
        return tp.values[-1]  # the first is often the default, which the encoding leaves out
    if isinstance(tp, t.StrType):
        if name == "id" or name.endswith("_id"):
            stem = name.removesuffix("_id") or "event"
            return "acme" if stem == "tenant" else new_id(ID_PREFIX.get(stem, stem[:4]))
        if name in ("sha256", "content_hash"):
            return hashlib.sha256(name.encode()).hexdigest()
        return TEXT.get(name, f"{name.replace('_', ' ')} of the example")
    if isinstance(tp, t.DateTimeType):
        return NOW
    if isinstance(tp, t.DateType):
        return NOW.date()
    if isinstance(tp, t.BoolType):
        return True
    if isinstance(tp, t.IntType):
        return 7
    if isinstance(tp, t.FloatType):
        return 0.42
    if isinstance(tp, t.ListType):
        return [realistic(tp.item_type, name.removesuffix("s")) for _ in range(2)]
    if isinstance(tp, t.DictType) and isinstance(tp.value_type, t.IntType):
        return {"gateway.runs": 2, "bucket:artifacts": 4}
    if isinstance(tp, t.DictType):
        return {"depth": 2, "language": "en", "sources": ["corpus", "web"]}
    if isinstance(tp, t.StructType):
        return build(tp.cls)
    raise AssertionError(f"no realistic value for {name}: {tp}")


def build(cls: type[msgspec.Struct]) -> msgspec.Struct:
    """An instance with every field set (so the encoding shows every field)."""
    info = msgspec.inspect.type_info(cls)
    assert isinstance(info, msgspec.inspect.StructType)
    values = {f.name: realistic(f.type, f.name) for f in info.fields}
    for f in info.fields:
        if isinstance(f.type, msgspec.inspect.BoolType) and f.default is True:
            values[f.name] = False
    return cls(**values)


def realistic_event(event_type: str) -> events.Event:
    payload = build(events.EVENT_TYPES[event_type])
    return events.Event(
        id=new_id("evt"),
        run_id=new_id("run"),
        tenant_id="acme",
        seq=12,
        type=event_type,
        time=NOW,
        producer="orchestrator/3f2a",
        causation_id=new_id("evt"),
        trace=TRACEPARENT,
        data=events.data_of(payload),
    )


def _validate(raw: bytes, schema_path: str) -> None:
    jsonschema.Draft202012Validator(SCHEMAS[schema_path]).validate(json.loads(raw))


STRUCTS: list[tuple[str, type[msgspec.Struct]]] = [
    *((f"payloads/{c.__name__}", c) for c in events.EVENT_TYPES.values()),
    *((f"payloads/{c.__name__}", c) for c in (events.PlanStep, events.Usage, events.ArtifactRef)),
    *((f"commands/{c.__name__}", c) for c in commands.COMMAND_TYPES.values()),
    *(
        (f"content/{c.__name__}", c)
        for c in (
            content.ContentModel,
            content.Section,
            content.Claim,
            content.Citation,
            content.Source,
        )
    ),
]


@pytest.mark.parametrize(("path", "cls"), STRUCTS, ids=[p for p, _ in STRUCTS])
def test_struct_round_trips_and_matches_its_schema(path: str, cls: type[msgspec.Struct]) -> None:
    value = build(cls)
    raw = msgspec.json.encode(value)
    assert msgspec.json.decode(raw, type=cls) == value
    fields = msgspec.structs.fields(cls)
    # Every field shows, but one that can only hold its default (`omit_defaults` leaves it out).
    shown = {f.name for f in fields if f.required or getattr(value, f.name) != f.default}
    assert set(json.loads(raw)) == shown
    _validate(raw, f"schemas/{path}.json")


@pytest.mark.parametrize("event_type", list(events.EVENT_TYPES))
def test_event_round_trips_through_both_envelopes(event_type: str) -> None:
    event = realistic_event(event_type)
    raw = events.encode_event(event)
    assert events.decode_event(raw) == event
    assert events.payload_of(events.decode_event(raw)) == build_like(event)

    typed_cls = codegen.envelopes()[event_type]
    typed = msgspec.json.decode(raw, type=typed_cls)
    assert msgspec.json.encode(typed) == raw
    name = events.EVENT_TYPES[event_type].__name__
    _validate(raw, f"schemas/envelopes/{name}Event.json")
    _validate(raw, "schemas/envelopes/RunEvent.json")
    _validate(raw, "schemas/envelopes/Event.json")


def build_like(event: events.Event) -> msgspec.Struct:
    return msgspec.convert(event.data, events.EVENT_TYPES[event.type])


def test_event_with_empty_data_fits_its_typed_envelope() -> None:
    event = realistic_event("run.cancelled")
    event.data = {}
    raw = events.encode_event(event)
    assert b'"data"' not in raw
    typed = msgspec.json.decode(raw, type=codegen.envelopes()["run.cancelled"])
    assert typed.data == events.RunCancelled()  # type: ignore[attr-defined]
    _validate(raw, "schemas/envelopes/RunEvent.json")


def test_schema_rejects_a_payload_that_does_not_fit_its_type() -> None:
    event = realistic_event("run.created")
    event.data = {"skill": "deep_research"}
    with pytest.raises(jsonschema.ValidationError, match="'question' is a required property"):
        _validate(events.encode_event(event), "schemas/envelopes/RunCreatedEvent.json")
    with pytest.raises(jsonschema.ValidationError):
        _validate(events.encode_event(event), "schemas/envelopes/RunEvent.json")
    with pytest.raises(msgspec.ValidationError, match="question"):
        events.payload_of(event)


STORED_TIMES = {
    "2026-11-24T03:15:14Z": datetime(2026, 11, 24, 3, 15, 14, tzinfo=UTC),
    "2026-11-24T03:15:14.123Z": datetime(2026, 11, 24, 3, 15, 14, 123000, tzinfo=UTC),
    "2026-11-24T03:15:14.123456Z": datetime(2026, 11, 24, 3, 15, 14, 123456, tzinfo=UTC),
    "2026-11-24T03:15:14+00:00": datetime(2026, 11, 24, 3, 15, 14, tzinfo=UTC),
    "2026-11-24T03:15:14.5+00:00": datetime(2026, 11, 24, 3, 15, 14, 500000, tzinfo=UTC),
    "2026-11-24T04:15:14+01:00": datetime(2026, 11, 24, 3, 15, 14, tzinfo=UTC),
}


@pytest.mark.parametrize("stored", list(STORED_TIMES))
def test_times_written_before_they_were_typed_still_decode(stored: str) -> None:
    """Events in the streams and the archive carry times as the old writers spelled them."""
    event = realistic_event("rate_limited")
    raw = events.encode_event(event).decode()
    old = raw.replace(f'"{NOW.isoformat().replace("+00:00", "Z")}"', f'"{stored}"')
    assert old.count(stored) == 2  # the envelope's time and the payload's retry_at
    decoded = events.decode_event(old)
    assert decoded.time == STORED_TIMES[stored]
    retry_at = events.payload_of(decoded).retry_at  # type: ignore[attr-defined]
    assert retry_at == STORED_TIMES[stored]  # the same instant
    _validate(old.encode(), "schemas/envelopes/RateLimitedEvent.json")


def test_times_are_written_as_rfc3339_utc() -> None:
    cest = timezone(timedelta(hours=2))
    event = realistic_event("run.started")
    event.time = datetime(2026, 11, 24, 5, 15, 14, 123456, tzinfo=cest)
    assert b'"time":"2026-11-24T05:15:14.123456+02:00"' in events.encode_event(event)
    event.time = NOW
    assert b'"time":"2026-11-24T03:15:14.123456Z"' in events.encode_event(event)


def test_a_time_without_an_offset_is_refused() -> None:
    raw = events.encode_event(realistic_event("run.started")).decode()
    with pytest.raises(msgspec.ValidationError, match="timezone"):
        events.decode_event(raw.replace("14.123456Z", "14.123456"))
