"""Backward compatibility of the wire contracts (`make contracts-check`).

Compares the JSON Schemas the contracts generate now with a baseline: the checked-in
`libs/contracts/generated/schemas` at a git revision (default `HEAD`), or the files on disk.
Adding an optional field is compatible. Removing or renaming a field, changing its type or its
default, making it required, adding a required field, or removing a type is not: a reader or
writer built on the baseline would break. Each problem names the type and the field.

Bounds (`pattern`, `format`, `minimum`/`maximum`, lengths) are not the type's shape: a bound
added or changed is listed as a narrowing and passes (a string becoming `format: date-time` is
one: the same RFC 3339 text on the wire, now declared); so is a string field that becomes a
closed set of values (a `Literal`), or an enum that loses values. An enum that gains a value
fails: a reader built on the baseline would refuse it. Bounds state what the stores and
subjects can hold (`types.py`), so a value outside them was never deliverable in the first
place. An enum marked open (`x-open-enum`, e.g. `Event.type`) may gain values: its readers skip
a value they do not know.

    python -m runloom.contracts.compat [--against HEAD|<git ref>|disk]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runloom.contracts import codegen
from runloom.contracts.events import OPEN_ENUM

Schema = dict[str, Any]
SCHEMAS_DIR = "schemas"
_DOC_KEYS = frozenset({"description", "title", "examples", "$comment", "default", OPEN_ENUM})
_BOUND_KEYS = frozenset(
    {
        "pattern",
        "format",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "minLength",
        "maxLength",
        "minItems",
        "maxItems",
    }
)


@dataclass(frozen=True, kw_only=True)
class Incompatibility:
    """One breaking difference between the baseline and the current contracts."""

    type_name: str
    """The type (schema component) that changed."""
    field: str | None
    """The field, when the change is to one field."""
    change: str
    """What changed, in words."""

    def __str__(self) -> str:
        where = f"{self.type_name}.{self.field}" if self.field else self.type_name
        return f"{where}: {self.change}"


def _strip(node: Any, keys: frozenset[str]) -> Any:
    if isinstance(node, dict):
        return {
            k: _strip_names(v, keys) if k in ("properties", "$defs") else _strip(v, keys)
            for k, v in sorted(node.items())
            if k not in keys
        }
    if isinstance(node, list):
        return [_strip(v, keys) for v in node]
    return node


def _strip_names(node: Any, keys: frozenset[str]) -> Any:
    """A map of names to schemas: a field named like a keyword (`format`) is kept."""
    if isinstance(node, dict):
        return {k: _strip(v, keys) for k, v in sorted(node.items())}
    return _strip(node, keys)


def _shape(prop: Schema) -> str:
    """A canonical form of a field's type (docs, defaults and bounds left out)."""
    return json.dumps(_strip(prop, _DOC_KEYS | _BOUND_KEYS), sort_keys=True)


def _bounded_shape(prop: Schema) -> str:
    return json.dumps(_strip(prop, _DOC_KEYS), sort_keys=True)


def _closed(before: Schema, after: Schema) -> bool:
    """A string field given a closed set of values, or an enum that lost values: the values a
    reader accepts shrink, as with a bound. (An enum that gains values breaks old readers.)"""
    values = after.get("enum")
    if not (isinstance(values, list) and values and all(isinstance(v, str) for v in values)):
        return False
    rest = _strip({k: v for k, v in after.items() if k != "enum"}, _DOC_KEYS | _BOUND_KEYS)
    if rest not in ({}, {"type": "string"}):
        return False
    if "enum" in before:
        return set(values) <= set(before["enum"])
    return json.loads(_shape(before)) == {"type": "string"}


def _grown_open(before: Schema, after: Schema) -> bool:
    """An open enum that gained values (and kept the rest): a baseline reader skips them."""
    old, new = before.get("enum"), after.get("enum")
    if not (after.get(OPEN_ENUM) and isinstance(old, list) and isinstance(new, list)):
        return False
    same_rest = _shape({**before, "enum": []}) == _shape({**after, "enum": []})
    return same_rest and set(old) <= set(new)


def narrowings(old: dict[str, Schema], new: dict[str, Schema]) -> list[str]:
    """Fields whose bounds changed or whose values became a closed set (reported, not
    failed), as `Type.field`."""
    old_c, new_c = components_of(old), components_of(new)
    out: list[str] = []
    for name in sorted(set(old_c) & set(new_c)):
        before = old_c[name].get("properties", {})
        after = new_c[name].get("properties", {})
        for field in sorted(set(before) & set(after)):
            a, b = before[field], after[field]
            if (_shape(a) == _shape(b) and _bounded_shape(a) != _bounded_shape(b)) or (
                _shape(a) != _shape(b) and _closed(a, b)
            ):
                out.append(f"{name}.{field}")
    return out


def _display(prop: Schema) -> str:
    """A field's type in JSON Schema words, e.g. `integer | null`, `array of PlanStep`."""
    if "$ref" in prop:
        return str(prop["$ref"]).rsplit("/", 1)[-1]
    if "enum" in prop:
        return " | ".join(json.dumps(v) for v in prop["enum"])
    for key in ("anyOf", "oneOf"):
        if key in prop:
            return " | ".join(_display(p) for p in prop[key])
    kind = prop.get("type", "any")
    if kind == "array":
        return f"array of {_display(prop.get('items', {}))}"
    if kind == "object" and isinstance(prop.get("additionalProperties"), dict):
        return f"object of {_display(prop['additionalProperties'])}"
    return " | ".join(kind) if isinstance(kind, list) else str(kind)


def components_of(files: dict[str, Schema]) -> dict[str, Schema]:
    """Every named component defined in a set of schema files."""
    out: dict[str, Schema] = {}
    for schema in files.values():
        out.update(schema.get("$defs", {}))
    return out


def _type_name(path: str) -> str:
    return Path(path).stem


def compare(old: dict[str, Schema], new: dict[str, Schema]) -> list[Incompatibility]:
    """Breaking changes from `old` to `new` ({schema file path: schema})."""
    problems: list[Incompatibility] = []
    for path in sorted(set(old) - set(new)):
        problems.append(
            Incompatibility(type_name=_type_name(path), field=None, change="type was removed")
        )
    old_c, new_c = components_of(old), components_of(new)
    for name in sorted(old_c):
        before = old_c[name]
        after = new_c.get(name)
        if after is None:
            if not any(p.type_name == name for p in problems):
                problems.append(Incompatibility(type_name=name, field=None, change="type removed"))
            continue
        problems += _compare_component(name, before, after)
    return problems


def _compare_component(name: str, before: Schema, after: Schema) -> list[Incompatibility]:
    if "properties" not in before or "properties" not in after:
        if _shape(before) != _shape(after):
            return [
                Incompatibility(
                    type_name=name,
                    field=None,
                    change=f"type changed from {_display(before)} to {_display(after)}",
                )
            ]
        return []
    out: list[Incompatibility] = []
    old_props: dict[str, Schema] = before["properties"]
    new_props: dict[str, Schema] = after["properties"]
    old_req, new_req = set(before.get("required", [])), set(after.get("required", []))
    for field, prop in old_props.items():
        if field not in new_props:
            out.append(
                Incompatibility(
                    type_name=name,
                    field=field,
                    change="field was removed or renamed (keep it; add a new optional field)",
                )
            )
            continue
        now = new_props[field]
        if _shape(prop) != _shape(now) and not (_closed(prop, now) or _grown_open(prop, now)):
            out.append(
                Incompatibility(
                    type_name=name,
                    field=field,
                    change=f"type changed from {_display(prop)} to {_display(now)}",
                )
            )
        if field not in old_req and field in new_req:
            out.append(Incompatibility(type_name=name, field=field, change="became required"))
        if field in old_req and field not in new_req:
            out.append(
                Incompatibility(
                    type_name=name,
                    field=field,
                    change="is no longer required (readers built on the baseline expect it)",
                )
            )
        if (
            field not in old_req
            and field not in new_req
            and prop.get("default") != now.get("default")
        ):
            out.append(
                Incompatibility(
                    type_name=name,
                    field=field,
                    change=(
                        f"default changed from {json.dumps(prop.get('default'))} to "
                        f"{json.dumps(now.get('default'))} (an omitted value would change meaning)"
                    ),
                )
            )
    for field in new_props:
        if field not in old_props and field in new_req:
            out.append(
                Incompatibility(
                    type_name=name,
                    field=field,
                    change="new required field (give it a default to keep old writers valid)",
                )
            )
    return out


# -- baselines ---------------------------------------------------------------------------------


class BaselineError(RuntimeError):
    pass


def _repo_root() -> Path:
    return codegen.GENERATED.parents[2]


def _generated_rel() -> str:
    return codegen.GENERATED.relative_to(_repo_root()).as_posix()


def baseline_from_git(ref: str) -> dict[str, Schema]:
    """The checked-in schemas at a git revision."""
    root = _repo_root()
    prefix = f"{_generated_rel()}/{SCHEMAS_DIR}"
    listing = subprocess.run(
        ["git", "ls-tree", "-r", "--name-only", ref, "--", prefix],
        cwd=root,
        capture_output=True,
        text=True,
    )
    if listing.returncode != 0:
        raise BaselineError(f"cannot list {prefix} at {ref}: {listing.stderr.strip()}")
    out: dict[str, Schema] = {}
    for name in listing.stdout.split():
        if not name.endswith(".json"):
            continue
        shown = subprocess.run(
            ["git", "show", f"{ref}:{name}"], cwd=root, capture_output=True, text=True, check=True
        )
        out[name[len(_generated_rel()) + 1 :]] = json.loads(shown.stdout)
    return out


def baseline_from_disk(folder: Path = codegen.GENERATED) -> dict[str, Schema]:
    """The schemas as checked in on disk now (before `make contracts` rewrites them)."""
    return {
        p.relative_to(folder).as_posix(): json.loads(p.read_text(encoding="utf-8"))
        for p in sorted((folder / SCHEMAS_DIR).rglob("*.json"))
    }


def current() -> dict[str, Schema]:
    """The schemas the contracts generate now."""
    return codegen.json_schemas()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m runloom.contracts.compat",
        description="Fail when the contracts changed in a way that breaks existing readers.",
    )
    parser.add_argument(
        "--against",
        default="HEAD",
        help="baseline: a git revision (default HEAD) or 'disk' for the checked-in files",
    )
    args = parser.parse_args(argv)
    against = args.against
    try:
        old = baseline_from_disk() if against == "disk" else baseline_from_git(against)
    except (BaselineError, subprocess.CalledProcessError, FileNotFoundError) as exc:
        if against != "HEAD":
            print(f"error: no baseline: {exc}", file=sys.stderr)
            return 2
        # Not a git checkout (an unpacked archive): the checked-in files are the baseline.
        print(f"note: {exc}; comparing with the checked-in files instead")
        against, old = "disk", baseline_from_disk()
    if not old:
        print(f"No schemas under {_generated_rel()} at {against}: nothing to be compatible with.")
        return 0
    now = current()
    narrowed = narrowings(old, now)
    if narrowed:
        print(f"Bounds changed against {against} (allowed): {', '.join(narrowed)}")
    problems = compare(old, now)
    if problems:
        print(f"Breaking contract changes against {against}:")
        for p in problems:
            print(f"  - {p}")
        print(
            "Readers and writers built on the baseline would break. Add new optional fields "
            "instead of changing or removing existing ones."
        )
        return 1
    print(f"Contracts compatible with {against} ({len(old)} schemas checked).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
