"""The checked-in generated contracts are exactly what the Python contracts generate."""

from __future__ import annotations

import json
from pathlib import Path

from runloom.contracts import codegen, commands, events


def test_checked_in_files_match_the_contracts() -> None:
    problems = codegen.drift()
    assert not problems, (
        "libs/contracts/generated is out of date; run `make contracts` and commit it:\n"
        + "\n".join(problems)
    )


def test_drift_is_detected(tmp_path: Path) -> None:
    codegen.write(tmp_path)
    assert codegen.drift(tmp_path) == []
    target = tmp_path / "schemas" / "payloads" / "RunCreated.json"
    target.write_text(target.read_text().replace('"question"', '"query"'))
    (tmp_path / "schemas" / "payloads" / "Gone.json").write_text("{}")
    (tmp_path / "runloom.d.ts").unlink()
    assert codegen.drift(tmp_path) == [
        "changed: schemas/payloads/RunCreated.json",
        "missing: runloom.d.ts",
        "stale: schemas/payloads/Gone.json",
    ]
    assert codegen.main(["--check", "--out", str(tmp_path)]) == 1
    codegen.write(tmp_path)
    assert codegen.drift(tmp_path) == []


def test_one_schema_per_type_with_typed_envelopes() -> None:
    schemas = codegen.json_schemas()
    for event_type, payload in events.EVENT_TYPES.items():
        name = payload.__name__
        assert f"schemas/payloads/{name}.json" in schemas
        envelope = schemas[f"schemas/envelopes/{name}Event.json"]
        props = envelope["$defs"][f"{name}Event"]["properties"]
        assert props["type"] == {"enum": [event_type]}
        assert props["data"]["$ref"] == f"#/$defs/{name}"
    for name in commands.COMMAND_TYPES:
        assert f"schemas/commands/{name}.json" in schemas
    assert "schemas/content/ContentModel.json" in schemas
    union = schemas["schemas/envelopes/RunEvent.json"]
    assert len(union["oneOf"]) == len(events.EVENT_TYPES)


def test_field_docstrings_become_descriptions() -> None:
    seq = codegen.json_schemas()["schemas/envelopes/Event.json"]["$defs"]["Event"]["properties"][
        "seq"
    ]
    assert seq["description"] == "Dense per-run sequence: 1, 2, 3 ... with no gap."
    assert "/** Dense per-run sequence: 1, 2, 3 ... with no gap. */" in codegen.typescript()


def test_asyncapi_lists_every_subject_and_message() -> None:
    doc = codegen.asyncapi()
    addresses = {c["address"] for c in doc["channels"].values()}
    assert {
        "run.{runId}.events",
        "cmd.run.start",
        "cmd.run.resume",
        "cmd.drive.run",
        "job.deliverable.{kind}",
        "billing.reserve",
        "billing.commit",
        "billing.release",
        "dlq.{stream}.{consumer}",
    } <= addresses
    run_messages = set(doc["channels"]["runEvents"]["messages"])
    assert run_messages == {f"{p.__name__}Event" for p in events.EVENT_TYPES.values()}
    assert json.loads(json.dumps(doc)) == doc
