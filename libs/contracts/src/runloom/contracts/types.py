"""Value types of the wire: ids with exact patterns, storable text, bounded numbers and JSON.

Input is validated once, at the edge, with these types; the same checks guard every subject
built from an id and every event appended, so the bus refuses what the HTTP API refuses.

- `RunId`, `DocumentId`, `ArtifactId`: msgspec-annotated strings (pattern in the generated
  schemas); `RUN_ID.check(value)` etc. validate one, raising `InvalidValue`.
- `Text`: a string PostgreSQL `text`/`jsonb` can hold (no NUL, no lone surrogate).
- `Usd`: finite, >= 0, <= `MAX_USD`.
- `check_json`: a free-form JSON object bounded in size and depth, holding only storable text.
- `check_token`: a string that may stand as one NATS subject token.
- `UtcTime` / `now()`: a point in time, timezone-aware (RFC 3339 on the wire).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec

__all__ = [
    "ARTIFACT_ID",
    "DOCUMENT_ID",
    "JSON_MAX_BYTES",
    "JSON_MAX_DEPTH",
    "MAX_USD",
    "RUN_ID",
    "ArtifactId",
    "DocumentId",
    "IdKind",
    "InvalidValue",
    "RunId",
    "Text",
    "Usd",
    "UtcTime",
    "check_json",
    "check_text",
    "check_token",
    "check_usd",
    "now",
    "rfc3339",
    "storable",
]


class InvalidValue(ValueError):
    """A value outside its contract type; the message says what to send instead."""


# -- ids ----------------------------------------------------------------------------------------

_ULID = "[0-9A-HJKMNP-TV-Z]{26}"
"""Crockford base32, upper case, as `ids.ulid` writes it."""


@dataclass(frozen=True)
class IdKind:
    """One kind of id: its exact pattern and how to say what a valid one looks like."""

    name: str
    """What the id names, in words (`run`)."""
    pattern: str
    """Anchored regular expression (Python and ECMAScript alike)."""
    example: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "_re", re.compile(self.pattern))

    def matches(self, value: object) -> bool:
        return isinstance(value, str) and self._re.fullmatch(value) is not None  # type: ignore[attr-defined]

    def check(self, value: object, field: str | None = None) -> str:
        """`value` if it is a valid id of this kind; InvalidValue saying what one looks like."""
        if self.matches(value):
            return value  # type: ignore[return-value]
        raise InvalidValue(
            f"{field or self.name + ' id'} {_shown(value)} is not a {self.name} id: "
            f"expected one like {self.example!r} (pattern {self.pattern})."
        )


RUN_ID = IdKind("run", f"^run_{_ULID}$", "run_01JD6Q0W7XKZ3T9M4N5P6R8S2V")
DOCUMENT_ID = IdKind("document", f"^doc_{_ULID}$", "doc_01JD6Q0W7XKZ3T9M4N5P6R8S2V")
ARTIFACT_ID = IdKind("artifact", "^art_[0-9a-f]{32}$", "art_" + "0123456789abcdef" * 2)

RunId = Annotated[str, msgspec.Meta(pattern=RUN_ID.pattern, examples=[RUN_ID.example])]
DocumentId = Annotated[
    str, msgspec.Meta(pattern=DOCUMENT_ID.pattern, examples=[DOCUMENT_ID.example])
]
ArtifactId = Annotated[
    str, msgspec.Meta(pattern=ARTIFACT_ID.pattern, examples=[ARTIFACT_ID.example])
]


# -- subject tokens -------------------------------------------------------------------------------

_TOKEN = re.compile(r"[A-Za-z0-9_\-]{1,128}")


def check_token(value: object, what: str = "subject token") -> str:
    """A string that may stand as one NATS subject token (no `.`, `*`, `>`, space or NUL)."""
    if isinstance(value, str) and _TOKEN.fullmatch(value) is not None:
        return value
    raise InvalidValue(
        f"{what} {_shown(value)} cannot be a subject token: use 1 to 128 of A-Z a-z 0-9 _ -."
    )


# -- text ---------------------------------------------------------------------------------------

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
TEXT_PATTERN = r"^[^\x00]*$"
"""What the generated schemas say (lone surrogates cannot be encoded as UTF-8 at all)."""

Text = Annotated[str, msgspec.Meta(pattern=TEXT_PATTERN)]


def check_text(value: str, field: str) -> str:
    """`value` if PostgreSQL can store it as text; InvalidValue naming the character otherwise."""
    bad = _UNSTORABLE.search(value)
    if bad is None:
        return value
    what = "a NUL character (\\u0000)" if bad.group() == "\x00" else "a lone surrogate"
    raise InvalidValue(
        f"{field} holds {what} at position {bad.start()}; remove it (text cannot store it)."
    )


# -- money ----------------------------------------------------------------------------------------

MAX_USD = 1_000_000_000
"""The largest budget or amount accepted, in USD (billing keeps 9 decimals in 28 digits)."""

Usd = Annotated[float, msgspec.Meta(ge=0, le=MAX_USD)]

_encoder = msgspec.json.Encoder()


def check_usd(value: float, field: str) -> float:
    """A finite amount in [0, MAX_USD]."""
    if not math.isfinite(value) or not 0 <= value <= MAX_USD:
        raise InvalidValue(
            f"{field} must be a finite amount between 0 and {MAX_USD:,} USD, not {value!r}."
        )
    return value


# -- time -----------------------------------------------------------------------------------------

UtcTime = Annotated[datetime, msgspec.Meta(tz=True)]
"""A point in time with its offset (UTC when we write it). msgspec encodes it as RFC 3339
(`2026-11-27T03:55:51.123456Z`) and decodes any RFC 3339 time, with or without fractional
seconds, `Z` or `+00:00`; one without an offset is refused."""


def now() -> datetime:
    """The current time, timezone-aware UTC: what a contract's time field is set to."""
    return datetime.now(UTC)


def rfc3339(value: datetime) -> str:
    """A time as the wire writes it (RFC 3339, `Z` for UTC): every time the HTTP API shows
    goes through here (or `rfc3339_or_none`), so a client parses one form."""
    return _encoder.encode(value.astimezone(UTC)).decode()[1:-1]


def rfc3339_or_none(value: datetime | None) -> str | None:
    """`rfc3339` of a time that may be missing."""
    return None if value is None else rfc3339(value)


# -- free-form JSON -------------------------------------------------------------------------------

JSON_MAX_BYTES = 64 * 1024
"""Largest encoded size of a free-form JSON object (e.g. a run's `options`)."""
JSON_MAX_DEPTH = 16
"""Deepest nesting of objects and arrays in a free-form JSON object."""


def check_json(
    value: dict[str, Any],
    field: str,
    *,
    max_bytes: int = JSON_MAX_BYTES,
    max_depth: int = JSON_MAX_DEPTH,
) -> dict[str, Any]:
    """A JSON object within size and depth bounds whose every key and string is storable."""
    problem = storable(value, field, max_depth=max_depth)
    if problem is not None:
        raise InvalidValue(problem)
    size = len(_encoder.encode(value))
    if size > max_bytes:
        raise InvalidValue(
            f"{field} is {size:,} bytes of JSON; at most {max_bytes:,} fit. Send less, or "
            "upload large material as a document."
        )
    return value


def storable(value: Any, field: str = "data", *, max_depth: int = 64) -> str | None:
    """Why `value` (JSON-like) cannot be stored, or None: NUL, lone surrogate, non-finite
    number, or nesting deeper than `max_depth`."""
    stack: list[tuple[Any, str, int]] = [(value, field, 0)]
    while stack:
        item, where, depth = stack.pop()
        if isinstance(item, str):
            if _UNSTORABLE.search(item) is not None:
                try:
                    check_text(item, where)
                except InvalidValue as exc:
                    return str(exc)
        elif isinstance(item, dict):
            if depth >= max_depth:
                return f"{where} nests deeper than {max_depth} levels; flatten it."
            for k, v in item.items():
                if not isinstance(k, str):
                    return f"{where} has a key that is not a string ({_shown(k)})."
                if _UNSTORABLE.search(k) is not None:
                    try:
                        check_text(k, f"a key of {where}")
                    except InvalidValue as exc:
                        return str(exc)
                stack.append((v, f"{where}.{k}", depth + 1))
        elif isinstance(item, list | tuple):
            if depth >= max_depth:
                return f"{where} nests deeper than {max_depth} levels; flatten it."
            stack.extend((v, f"{where}[{i}]", depth + 1) for i, v in enumerate(item))
        elif isinstance(item, float) and not math.isfinite(item):
            return f"{where} is {item!r}; JSON numbers must be finite."
    return None


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
