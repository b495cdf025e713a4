"""Test helpers for deliverables: put a run with a stored content model on the bus and request
deliverables of it, exactly as the orchestrator does (run.created, content.stored,
deliverable.requested, then a DeliverableJob on the JOBS stream with msg id = job id); read
artifacts back with real parsers of their formats."""

from __future__ import annotations

import asyncio
import hashlib
import io
import re
import time
import zipfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any, TypeVar

from runloom.contracts import subjects
from runloom.contracts.commands import DeliverableJob
from runloom.contracts.content import ContentModel, content_hash
from runloom.contracts.events import (
    ContentStored,
    DeliverableRequested,
    Event,
    RunCreated,
)
from runloom.contracts.ids import new_id
from runloom.contracts.kinds import DeliverableKind
from runloom.runtime import bus
from runloom.runtime.eventlog import EventLog

T = TypeVar("T")


async def eventually(
    probe: Callable[[], Awaitable[T | None]],
    timeout: float = 30.0,
    what: str = "condition",
    every: float = 0.1,
) -> T:
    """Poll `probe` every `every` seconds until it returns something truthy, or fail after
    `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(every)


@dataclass
class TestRun:
    __test__ = False
    run_id: str
    tenant_id: str
    content: ContentModel
    hash: str
    log: EventLog
    js: Any

    def job(self, kind: DeliverableKind, formats: list[str] | None = None) -> DeliverableJob:
        job_id = hashlib.sha256(f"{self.run_id}:{kind}:{self.hash}".encode()).hexdigest()
        return DeliverableJob(
            job_id=job_id,
            run_id=self.run_id,
            tenant_id=self.tenant_id,
            kind=kind,
            content_hash=self.hash,
            formats=formats or [],
        )

    async def request(self, kind: DeliverableKind, *, msg_id: str | None = None) -> DeliverableJob:
        job = self.job(kind)
        await self.log.append(
            self.run_id,
            self.tenant_id,
            DeliverableRequested(kind=kind, job_id=job.job_id, content_hash=self.hash),
            event_id=f"{job.job_id}:requested",
            check_existing=True,
        )
        await bus.publish(self.js, subjects.deliverable_job(kind), job, msg_id=msg_id or job.job_id)
        return job

    async def events(self, type: str | None = None) -> list[Event]:
        evs = await self.log.events(self.run_id)
        return [e for e in evs if type is None or e.type == type]


async def new_run(js: Any, tenant_id: str, content: ContentModel) -> TestRun:
    """A run with `run.created` and `content.stored` appended, as the orchestrator writes them."""
    import msgspec

    run_id = new_id("run")
    content = msgspec.structs.replace(content, run_id=run_id)
    log = EventLog(js, "tests/deliverables")
    await log.append(run_id, tenant_id, RunCreated(question=content.question))
    h = content_hash(content)
    await log.append(run_id, tenant_id, ContentStored(content_hash=h, content=content))
    return TestRun(run_id, tenant_id, content, h, log, js)


# -- reading artifacts back with real parsers of their formats ---------------------------


class _Html(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.text: list[str] = []
        self.tags: list[str] = []
        self.hrefs: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        a = dict(attrs)
        if a.get("href"):
            self.hrefs.append(a["href"] or "")
        if a.get("id"):
            self.ids.add(a["id"] or "")

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse_html(data: bytes) -> _Html:
    p = _Html()
    p.feed(data.decode("utf-8"))
    return p


def squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


def text_of(kind: str, fmt: str, data: bytes) -> str:
    """The visible text of an artifact, read back with a real parser of its format."""
    if fmt == "md":
        return re.sub(r"\\(.)", r"\1", data.decode("utf-8"))
    if fmt == "html":
        return "".join(parse_html(data).text)
    if fmt == "pdf":
        from pypdf import PdfReader  # a dev dependency: imported only by tests

        return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(data)).pages)
    if fmt == "docx":
        from docx import Document as open_docx

        return "\n".join(p.text for p in open_docx(io.BytesIO(data)).paragraphs)
    if fmt == "zip":
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            pages = [n for n in zf.namelist() if n.endswith(".html")]
            return "\n".join("".join(parse_html(zf.read(n)).text) for n in pages)
    if fmt == "pptx":
        from pptx import Presentation

        out = []
        for slide in Presentation(io.BytesIO(data)).slides:
            for shape in slide.shapes:
                if shape.has_text_frame:
                    out.append(shape.text_frame.text)
            if slide.has_notes_slide:
                out.append(slide.notes_slide.notes_text_frame.text)
        # python-pptx stores characters XML cannot hold as OOXML `_xHHHH_` escapes, which
        # PowerPoint decodes on display; so does this reader.
        return re.sub(r"_x([0-9A-Fa-f]{4})_", lambda m: chr(int(m.group(1), 16)), "\n".join(out))
    raise AssertionError(f"no parser for {fmt}")
