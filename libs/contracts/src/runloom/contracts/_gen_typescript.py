"""`runloom.d.ts`: TypeScript declarations of every wire type (private to `codegen`)."""

from __future__ import annotations

import json

from runloom.contracts import events
from runloom.contracts._gen_schema import HEADER, Schema, components, envelopes, group_of

# -- TypeScript ------------------------------------------------------------------------------------


def _ts_type(schema: Schema) -> str:
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    if "enum" in schema:
        return " | ".join(json.dumps(v) for v in schema["enum"])
    if "const" in schema:
        return json.dumps(schema["const"])
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return " | ".join(_ts_type(s) for s in schema[key])
    kind = schema.get("type")
    if isinstance(kind, list):
        return " | ".join(_ts_type({**schema, "type": k}) for k in kind)
    if kind == "string":
        return "DateTime" if schema.get("format") == "date-time" else "string"
    if kind in ("integer", "number"):
        return "number"
    if kind == "boolean":
        return "boolean"
    if kind == "null":
        return "null"
    if kind == "array":
        item = _ts_type(schema.get("items", {}))
        return f"Array<{item}>" if " " in item else f"{item}[]"
    if kind == "object":
        values = schema.get("additionalProperties")
        value = _ts_type(values) if isinstance(values, dict) else "unknown"
        return f"Record<string, {value}>"
    return "unknown"


def _ts_doc(text: str | None, indent: str = "") -> list[str]:
    if not text:
        return []
    lines = text.replace("*/", "*\\/").splitlines()
    if len(lines) == 1:
        return [f"{indent}/** {lines[0]} */"]
    return [f"{indent}/**", *(f"{indent} * {line}".rstrip() for line in lines), f"{indent} */"]


def _ts_interface(name: str, schema: Schema) -> list[str]:
    out = _ts_doc(schema.get("description"))
    out.append(f"export interface {name} {{")
    required = set(schema.get("required", []))
    for field, prop in schema.get("properties", {}).items():
        out += _ts_doc(prop.get("description"), "  ")
        optional = "" if field in required else "?"
        out.append(f"  {field}{optional}: {_ts_type(prop)};")
    out.append("}")
    return out


def typescript() -> str:
    """`runloom.d.ts`: every wire type, and `RunEvent`, the union discriminated by `type`."""
    _, comps = components()
    order = ["envelopes", "payloads", "commands", "content", "webhooks"]
    titles = {
        "envelopes": "Run events: the envelope, and one specialised envelope per type",
        "payloads": "Event payloads (the `data` of each event type) and shared pieces",
        "commands": "Commands, jobs and billing requests/replies (work-queue and request/reply)",
        "content": "The content model every deliverable renders from",
        "webhooks": "Webhooks: the signed bodies POSTed to endpoints, and their management",
    }
    lines = [f"// {HEADER}", f"// Contracts schema version {events.SCHEMA_VERSION}.", ""]
    lines += _ts_doc("A point in time, RFC 3339 (`2026-11-27T03:55:51.123456Z`): `new Date(t)`.")
    lines += ["export type DateTime = string;", ""]
    for group in order:
        lines += ["// " + "-" * 94, f"// {titles[group]}", ""]
        for name, schema in comps.items():
            if group_of(name) == group:
                lines += [*_ts_interface(name, schema), ""]
    env = envelopes()
    lines += _ts_doc("Any run event; narrow on `type` to get the typed `data`.")
    lines.append("export type RunEvent =")
    names = [cls.__name__ for cls in env.values()]
    lines += [f"  | {n}" for n in names[:-1]] + [f"  | {names[-1]};", ""]
    lines += ["/** Every run event type. */", 'export type RunEventType = RunEvent["type"];', ""]
    lines += ["/** The payload (`data`) of each event type. */"]
    lines.append("export interface RunEventData {")
    lines += [f"  {json.dumps(t)}: {p.__name__};" for t, p in events.EVENT_TYPES.items()]
    lines += ["}", ""]
    terminal = " | ".join(json.dumps(t) for t in events.EVENT_TYPES if t in events.TERMINAL_TYPES)
    lines += ["/** Event types that end a run; nothing follows them. */"]
    lines += [f"export type TerminalEventType = {terminal};", ""]
    return "\n".join(lines)
