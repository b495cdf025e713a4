"""RFC 6902 JSON Patch, the small part AG-UI state needs: a diff that emits add/remove/replace,
and an apply for those three operations (what a client holds after a STATE_DELTA)."""

from __future__ import annotations

import copy
from typing import Any


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def diff(old: Any, new: Any, path: str = "") -> list[dict[str, Any]]:
    """Operations that turn `old` into `new` (objects key by key, equal-length arrays item by
    item, a grown array by appends; anything else is replaced whole)."""
    if old == new and type(old) is type(new):
        return []
    if isinstance(old, dict) and isinstance(new, dict):
        ops: list[dict[str, Any]] = [
            {"op": "remove", "path": f"{path}/{_escape(k)}"} for k in old if k not in new
        ]
        for key, value in new.items():
            where = f"{path}/{_escape(key)}"
            if key not in old:
                ops.append({"op": "add", "path": where, "value": value})
            else:
                ops.extend(diff(old[key], value, where))
        return ops
    if isinstance(old, list) and isinstance(new, list):
        if len(old) == len(new):
            pairs = enumerate(zip(old, new, strict=True))
            return [op for i, (a, b) in pairs for op in diff(a, b, f"{path}/{i}")]
        if len(new) > len(old) and new[: len(old)] == old:
            return [{"op": "add", "path": f"{path}/-", "value": v} for v in new[len(old) :]]
    return [{"op": "replace", "path": path, "value": new}]


def apply(doc: Any, ops: list[dict[str, Any]]) -> Any:
    """`doc` after the operations (a new document; `doc` is left as it was)."""
    doc = copy.deepcopy(doc)
    for op in ops:
        kind, path = op["op"], op["path"]
        if path == "":
            if kind not in ("add", "replace"):
                raise ValueError(f"cannot {kind} the whole document")
            doc = copy.deepcopy(op["value"])
            continue
        *parents, last = [_unescape(t) for t in path.split("/")[1:]]
        target = doc
        for token in parents:
            target = target[int(token)] if isinstance(target, list) else target[token]
        if isinstance(target, list):
            if kind == "add":
                index = len(target) if last == "-" else int(last)
                target.insert(index, copy.deepcopy(op["value"]))
            elif kind == "replace":
                target[int(last)] = copy.deepcopy(op["value"])
            elif kind == "remove":
                del target[int(last)]
            else:
                raise ValueError(f"unsupported operation {kind!r}")
        elif kind in ("add", "replace"):
            if kind == "replace" and last not in target:
                raise KeyError(path)
            target[last] = copy.deepcopy(op["value"])
        elif kind == "remove":
            del target[last]
        else:
            raise ValueError(f"unsupported operation {kind!r}")
    return doc
