"""The report's content model: sections -> claims -> citations -> sources.

Written by the orchestrator, stored durably (a `content.stored` event), rendered by the
deliverables service into every format. Nothing is rendered that is not in here.
"""

from __future__ import annotations

import hashlib

import msgspec
from runloom.contracts.types import UtcTime


class Source(msgspec.Struct, kw_only=True, omit_defaults=True):
    source_id: str
    title: str
    text: str
    """The stored passage(s) of the source that citations quote from."""
    document_id: str | None = None
    url: str | None = None


class Citation(msgspec.Struct, kw_only=True, omit_defaults=True):
    source_id: str
    passage: str
    """Exact text found in the source's `text` (verified in code)."""


class Claim(msgspec.Struct, kw_only=True, omit_defaults=True):
    claim_id: str
    text: str
    citations: list[Citation] = []
    flagged: bool = False
    """True when the claim could not be supported and is kept only as flagged."""


class Section(msgspec.Struct, kw_only=True, omit_defaults=True):
    section_id: str
    title: str
    claims: list[Claim] = []
    summary: str | None = None


class ContentModel(msgspec.Struct, kw_only=True, omit_defaults=True):
    run_id: str
    title: str
    question: str
    sections: list[Section] = []
    sources: list[Source] = []
    summary: str | None = None
    partial: bool = False
    missing: list[str] = []
    generated_at: UtcTime | None = None


_encoder = msgspec.json.Encoder(order="sorted")


def content_hash(content: ContentModel) -> str:
    """Stable hash of a content model (sorted keys), the key of every deliverable job."""
    return hashlib.sha256(_encoder.encode(content)).hexdigest()
