"""Request parameter and field types, built from the contract types (`runloom.contracts.types`).

What each type refuses is also what the OpenAPI document declares (pattern, bounds), so a
client reading the schema knows what the API accepts.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path, Query
from pydantic import AfterValidator, Field, ValidationInfo
from runloom.contracts.types import (
    ARTIFACT_ID,
    DOCUMENT_ID,
    MAX_USD,
    RUN_ID,
    IdKind,
    check_json,
    check_text,
)

TEXT_PATTERN = r"^[^\x00]*$"
"""Any text without NUL (lone surrogates cannot be sent as UTF-8 JSON at all)."""
NONBLANK_PATTERN = r"^[^\x00]*[^\x00\s][^\x00]*$"
"""Text with at least one visible character and no NUL."""
KEY_PATTERN = r"^[!-~]{1,200}$"
"""An Idempotency-Key: 1 to 200 visible ASCII characters."""
MAX_OFFSET = 1_000_000
"""The largest `offset` a listing takes."""


def _storable(value: str, info: ValidationInfo) -> str:
    return check_text(value, info.field_name or "text")


def _nonblank(value: str, info: ValidationInfo) -> str:
    value = check_text(value, info.field_name or "text").strip()
    if not value:
        raise ValueError(f"{info.field_name or 'text'} must not be empty or only spaces")
    return value


def text(
    max_length: int | None, description: str = "", *, nonblank: bool = False, optional: bool = False
) -> Any:
    """A body field holding storable text (refused with a message naming the character);
    `optional` ones default to None."""
    pattern = NONBLANK_PATTERN if nonblank else TEXT_PATTERN
    extra: dict[str, Any] = {"default": None} if optional else {}
    return Field(
        **extra,
        max_length=max_length,
        min_length=1 if nonblank else 0,
        description=description or None,
        json_schema_extra={"pattern": pattern},
    )


StorableText = Annotated[str, AfterValidator(_storable)]
NonBlankText = Annotated[str, AfterValidator(_nonblank)]


def _json_object(value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
    return check_json(value, info.field_name or "options")


JsonObject = Annotated[dict[str, Any], AfterValidator(_json_object)]
"""A free-form JSON object, bounded in size and depth (contracts.types.check_json)."""


def _id_path(kind: IdKind) -> Any:
    return Path(
        pattern=kind.pattern,
        description=f"The {kind.name}'s id, e.g. `{kind.example}`.",
        examples=[kind.example],
    )


RunIdPath = Annotated[str, _id_path(RUN_ID)]
DocumentIdPath = Annotated[str, _id_path(DOCUMENT_ID)]
ArtifactIdPath = Annotated[str, _id_path(ARTIFACT_ID)]

RunIdQuery = Annotated[
    str | None,
    Query(pattern=RUN_ID.pattern, description="One run's id.", examples=[RUN_ID.example]),
]

Usd = Annotated[float, Field(ge=0, le=MAX_USD, allow_inf_nan=False, strict=True)]
"""An amount in USD: finite, 0 to MAX_USD."""
