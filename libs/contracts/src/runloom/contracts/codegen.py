"""Generate JSON Schema, TypeScript and AsyncAPI from the contracts (`make contracts`).

`python -m runloom.contracts.codegen` rewrites `libs/contracts/generated/`; `--check` only
reports drift. Everything is derived from the msgspec Structs in `events`, `commands` and
`content`: their JSON Schema (msgspec), with each field's docstring as its description.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from runloom.contracts._gen_asyncapi import asyncapi
from runloom.contracts._gen_schema import (
    GENERATED,
    components,
    envelopes,
    json_schemas,
    schema_of,
    specialised_envelope,
)
from runloom.contracts._gen_typescript import typescript

# -- files -----------------------------------------------------------------------------------------


def _json(doc: Any) -> str:
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def render() -> dict[str, str]:
    """`{path relative to generated/: text}` of every generated file."""
    files = {path: _json(schema) for path, schema in json_schemas().items()}
    files["runloom.d.ts"] = typescript()
    files["asyncapi.json"] = _json(asyncapi())
    return files


def drift(out: Path = GENERATED) -> list[str]:
    """Files that differ from what the contracts generate now (missing, changed, stale)."""
    files = render()
    problems = []
    for rel, text in files.items():
        path = out / rel
        if not path.exists():
            problems.append(f"missing: {rel}")
        elif path.read_text(encoding="utf-8") != text:
            problems.append(f"changed: {rel}")
    if out.exists():
        for path in sorted(out.rglob("*")):
            rel = path.relative_to(out).as_posix()
            if path.is_file() and rel not in files and not _kept(rel):
                problems.append(f"stale: {rel}")
    return problems


def _kept(rel: str) -> bool:
    return rel == "README.md"


def write(out: Path = GENERATED) -> list[str]:
    """Rewrite the generated folder; returns the files written or removed."""
    files = render()
    changed = []
    if out.exists():
        for path in sorted(out.rglob("*")):
            rel = path.relative_to(out).as_posix()
            if path.is_file() and rel not in files and not _kept(rel):
                path.unlink()
                changed.append(f"removed {rel}")
    for rel, text in files.items():
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            changed.append(f"wrote {rel}")
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m runloom.contracts.codegen", description=__doc__
    )
    parser.add_argument("--out", type=Path, default=GENERATED, help="output folder")
    parser.add_argument("--check", action="store_true", help="report drift, write nothing")
    args = parser.parse_args(argv)
    if args.check:
        problems = drift(args.out)
        for p in problems:
            print(p)
        if problems:
            print("Generated contracts are out of date: run `make contracts` and commit them.")
            return 1
        print(f"{len(render())} generated files are up to date.")
        return 0
    changed = write(args.out)
    for line in changed:
        print(line)
    print(f"{len(render())} files in {args.out} ({len(changed)} changed).")
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = [
    "GENERATED",
    "asyncapi",
    "components",
    "drift",
    "envelopes",
    "json_schemas",
    "main",
    "render",
    "schema_of",
    "specialised_envelope",
    "typescript",
    "write",
]
