"""`runloom.contracts.types`: what each type accepts, what it refuses and how it says so."""

from __future__ import annotations

import math

import msgspec
import pytest
from runloom.contracts import subjects
from runloom.contracts.commands import ReserveRequest, StartRun
from runloom.contracts.events import RunCreated
from runloom.contracts.ids import new_id
from runloom.contracts.types import (
    ARTIFACT_ID,
    DOCUMENT_ID,
    MAX_USD,
    RUN_ID,
    InvalidValue,
    check_json,
    check_text,
    check_token,
    check_usd,
    storable,
)

HOSTILE_IDS = ["*", ">", "run_*", "run.x", "run_01 J", "run_\x00", "", "run_" + "A" * 27, "RUN_1"]


def test_ids_made_by_new_id_match_their_kind() -> None:
    assert RUN_ID.check(new_id("run")).startswith("run_")
    assert DOCUMENT_ID.matches(new_id("doc"))
    assert not RUN_ID.matches(new_id("doc"))
    assert ARTIFACT_ID.matches(ARTIFACT_ID.example)


@pytest.mark.parametrize("bad", HOSTILE_IDS)
def test_a_malformed_run_id_is_refused_with_what_to_send(bad: str) -> None:
    with pytest.raises(InvalidValue, match="is not a run id: expected one like 'run_"):
        RUN_ID.check(bad)


@pytest.mark.parametrize("bad", HOSTILE_IDS)
def test_no_subject_is_built_from_a_malformed_run_id(bad: str) -> None:
    with pytest.raises(InvalidValue):
        subjects.run_events(bad)


def test_subject_builders_check_every_token() -> None:
    run_id = new_id("run")
    assert subjects.run_id_of(subjects.run_events(run_id)) == run_id
    assert subjects.deliverable_job("slides") == "job.deliverable.slides"
    with pytest.raises(ValueError):
        subjects.deliverable_job(">")
    assert subjects.dead_letter("JOBS", "deliverables") == "dlq.JOBS.deliverables"
    for bad in ("a.b", "*", ">", "a b", "", "a\x00"):
        with pytest.raises(InvalidValue):
            subjects.dead_letter(bad, "c")
        with pytest.raises(InvalidValue):
            check_token(bad)


def test_text_refuses_nul_and_lone_surrogates_naming_the_position() -> None:
    assert check_text("naïve — ok ✓ 🙂", "question") == "naïve — ok ✓ 🙂"
    with pytest.raises(InvalidValue, match=r"question holds a NUL character .* position 2"):
        check_text("ab\x00", "question")
    with pytest.raises(InvalidValue, match="lone surrogate"):
        check_text("a\ud800", "question")


@pytest.mark.parametrize("bad", [-0.01, math.inf, -math.inf, math.nan, 1e300, MAX_USD + 1])
def test_usd_is_finite_and_bounded(bad: float) -> None:
    with pytest.raises(InvalidValue, match=f"between 0 and {MAX_USD:,} USD"):
        check_usd(bad, "budget_usd")
    assert check_usd(0.0, "budget_usd") == 0.0 and check_usd(MAX_USD, "x") == MAX_USD


def test_json_is_bounded_in_depth_and_size_and_storable() -> None:
    assert check_json({"a": [1, {"b": "c"}], "n": 1.5}, "options") == {
        "a": [1, {"b": "c"}],
        "n": 1.5,
    }
    deep: dict[str, object] = {}
    node = deep
    for _ in range(40):
        node["x"] = {}
        node = node["x"]  # type: ignore[assignment]
    with pytest.raises(InvalidValue, match="nests deeper than 16 levels"):
        check_json(deep, "options")
    with pytest.raises(InvalidValue, match="bytes of JSON; at most 65,536 fit"):
        check_json({"a": "x" * 70_000}, "options")
    with pytest.raises(InvalidValue, match=r"options\.a\[1\] holds a NUL"):
        check_json({"a": ["ok", "b\x00"]}, "options")
    with pytest.raises(InvalidValue, match="a key of options"):
        check_json({"k\x00": 1}, "options")
    assert storable({"x": math.inf}) == "data.x is inf; JSON numbers must be finite."


def test_decoders_on_the_bus_refuse_what_the_edge_refuses() -> None:
    good = msgspec.json.encode(StartRun(command_id="c", run_id=new_id("run"), tenant_id="t"))
    msgspec.json.decode(good, type=StartRun)
    with pytest.raises(msgspec.ValidationError, match="run_id"):
        msgspec.json.decode(b'{"command_id":"c","run_id":"run.*","tenant_id":"t"}', type=StartRun)
    with pytest.raises(msgspec.ValidationError, match="question"):
        msgspec.convert({"question": "a\x00"}, RunCreated)
    with pytest.raises(msgspec.ValidationError, match="budget_usd"):
        msgspec.convert({"question": "q", "budget_usd": 1e300}, RunCreated)
    with pytest.raises(msgspec.ValidationError, match="estimated_usd"):
        msgspec.convert(
            {
                "reservation_id": "r",
                "tenant_id": "t",
                "run_id": new_id("run"),
                "estimated_usd": -1,
                "kind": "tool",
            },
            ReserveRequest,
        )
