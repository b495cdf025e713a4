"""`runloom.contracts.compat`: optional additions pass; removals, renames, type changes fail."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from runloom.contracts import compat

BEFORE: dict[str, Any] = {
    "schemas/payloads/StepFailed.json": {
        "$ref": "#/$defs/StepFailed",
        "$defs": {
            "StepFailed": {
                "title": "StepFailed",
                "type": "object",
                "properties": {
                    "step_id": {"type": "string"},
                    "error": {"type": "string", "description": "What went wrong."},
                    "reason": {"type": "string", "default": "error"},
                    "retryable": {"type": "boolean", "default": False},
                    "attempt": {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": None},
                },
                "required": ["step_id", "error"],
            }
        },
    },
    "schemas/payloads/RunCancelled.json": {
        "$ref": "#/$defs/RunCancelled",
        "$defs": {
            "RunCancelled": {
                "type": "object",
                "properties": {"reason": {"type": "string", "default": ""}},
                "required": [],
            }
        },
    },
}


def edit(fn: Any) -> dict[str, Any]:
    after = copy.deepcopy(BEFORE)
    fn(after["schemas/payloads/StepFailed.json"]["$defs"]["StepFailed"], after)
    return after


def messages(after: dict[str, Any]) -> list[str]:
    return [str(p) for p in compat.compare(BEFORE, after)]


def test_unchanged_and_documentation_changes_pass() -> None:
    assert messages(copy.deepcopy(BEFORE)) == []
    assert messages(edit(lambda s, _: s["properties"]["error"].update(description="Why."))) == []


def test_adding_an_optional_field_passes() -> None:
    def add(s: dict[str, Any], _: Any) -> None:
        s["properties"]["hint"] = {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None}

    assert messages(edit(add)) == []


def test_removing_a_field_fails_naming_type_and_field() -> None:
    assert messages(edit(lambda s, _: s["properties"].pop("retryable"))) == [
        "StepFailed.retryable: field was removed or renamed (keep it; add a new optional field)"
    ]


def test_renaming_a_field_fails() -> None:
    def rename(s: dict[str, Any], _: Any) -> None:
        s["properties"]["message"] = s["properties"].pop("error")
        s["required"] = ["step_id", "message"]

    assert messages(edit(rename)) == [
        "StepFailed.error: field was removed or renamed (keep it; add a new optional field)",
        "StepFailed.message: new required field (give it a default to keep old writers valid)",
    ]


def test_changing_a_type_fails() -> None:
    def retype(s: dict[str, Any], _: Any) -> None:
        s["properties"]["attempt"] = {"anyOf": [{"type": "string"}, {"type": "null"}]}
        s["properties"]["attempt"]["default"] = None

    assert messages(edit(retype)) == [
        "StepFailed.attempt: type changed from integer | null to string | null"
    ]


def test_required_and_default_changes_fail() -> None:
    def tighten(s: dict[str, Any], _: Any) -> None:
        s["required"].append("reason")
        s["properties"]["retryable"]["default"] = True

    assert messages(edit(tighten)) == [
        "StepFailed.reason: became required",
        "StepFailed.retryable: default changed from false to true (an omitted value would change "
        "meaning)",
    ]


def test_removing_a_type_fails() -> None:
    after = copy.deepcopy(BEFORE)
    del after["schemas/payloads/RunCancelled.json"]
    assert messages(after) == ["RunCancelled: type was removed"]


def test_current_contracts_are_compatible_with_the_checked_in_schemas() -> None:
    assert compat.compare(compat.baseline_from_disk(), compat.current()) == []


def test_current_contracts_are_compatible_with_head() -> None:
    try:
        baseline = compat.baseline_from_git("HEAD")
    except compat.BaselineError as exc:
        pytest.skip(f"not a git checkout: {exc}")
    assert baseline, "HEAD has no checked-in schemas"
    problems = compat.compare(baseline, compat.current())
    assert problems == [], "breaking changes against HEAD:\n" + "\n".join(map(str, problems))


def test_cli_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert compat.main(["--against", "disk"]) == 0
    assert "compatible with disk" in capsys.readouterr().out
    assert compat.main(["--against", "no-such-revision-xyz"]) == 2


def test_adding_or_changing_a_bound_passes_and_is_reported() -> None:
    def bound(s: dict[str, Any], _: Any) -> None:
        s["properties"]["step_id"]["pattern"] = "^[a-z0-9_]+$"
        s["properties"]["error"]["maxLength"] = 2000

    after = edit(bound)
    assert messages(after) == []
    assert compat.narrowings(BEFORE, after) == ["StepFailed.error", "StepFailed.step_id"]


def test_a_string_becoming_a_closed_set_passes_and_gaining_a_value_fails() -> None:
    def kinds(*values: Any) -> dict[str, Any]:
        def set_enum(s: dict[str, Any], _: Any) -> None:
            s["properties"]["step_id"] = {"enum": list(values)}

        return edit(set_enum)

    closed = kinds("research", "write")
    assert messages(closed) == []
    assert compat.narrowings(BEFORE, closed) == ["StepFailed.step_id"]
    assert compat.compare(closed, kinds("research")) == []
    (problem,) = compat.compare(closed, kinds("research", "write", "deliver"))
    assert problem.field == "step_id" and "type changed" in problem.change
    assert messages(kinds(1, 2)) != []


def test_a_string_becoming_a_date_time_passes_and_is_reported() -> None:
    def timed(s: dict[str, Any], _: Any) -> None:
        s["properties"]["error"]["format"] = "date-time"
        s["properties"]["attempt"] = {
            "anyOf": [{"type": "string", "format": "date-time"}, {"type": "null"}],
            "default": None,
        }

    after = edit(timed)
    (problem,) = messages(after)  # attempt was an integer: a format does not hide that
    assert problem.startswith("StepFailed.attempt: type changed")
    assert compat.narrowings(BEFORE, after) == ["StepFailed.error"]


def test_a_field_named_like_a_keyword_is_still_a_field() -> None:
    def inline(*names: str) -> dict[str, Any]:
        def set_object(s: dict[str, Any], _: Any) -> None:
            s["properties"]["step_id"] = {
                "type": "object",
                "properties": {n: {"type": "string"} for n in names},
            }

        return edit(set_object)

    (problem,) = compat.compare(inline("format", "pattern"), inline("pattern"))
    assert problem.field == "step_id" and "type changed" in problem.change


def test_an_open_enum_may_gain_values() -> None:
    def kinds(*values: str, open_: bool = True) -> dict[str, Any]:
        def set_enum(s: dict[str, Any], _: Any) -> None:
            s["properties"]["step_id"] = {"enum": list(values), "x-open-enum": open_}

        return edit(set_enum)

    assert compat.compare(kinds("a", "b"), kinds("a", "b", "c")) == []
    assert compat.compare(kinds("a", "b", open_=False), kinds("a", "b", "c", open_=False)) != []
    (problem,) = compat.compare(kinds("a", "b"), kinds("a", "c"))  # lost a value a writer sends
    assert problem.field == "step_id" and "type changed" in problem.change
