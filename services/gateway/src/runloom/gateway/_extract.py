"""Text of an uploaded document, read in a worker process bounded in time and memory.

PDF and HTML parsing is CPU work on hostile bytes (a page tree of 100k kids, an 18 MB page):
it runs in a child process whose address space is capped, and which is killed when it runs
past its time. Children are forked from a multiprocessing forkserver that has pypdf loaded
(starting a fresh interpreter per upload cost seconds on a loaded host). Plain text and
Markdown are only decoded, here. Whatever fails answers a Problem a person can act on.
"""

from __future__ import annotations

import asyncio
import io
import multiprocessing
import re
import resource
from dataclasses import dataclass
from html.parser import HTMLParser
from multiprocessing.connection import Connection
from pathlib import PurePath
from typing import Any

import msgspec
from runloom.runtime.config import env_float

TYPES = {
    ".txt": "text/plain",
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".html": "text/html",
    ".htm": "text/html",
    ".pdf": "application/pdf",
}
_WORKER_TYPES = frozenset({"text/html", "application/pdf"})
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


@dataclass(frozen=True, kw_only=True)
class ParseLimits:
    """Bounds of one upload's parsing (RUNLOOM_PARSE_* environment variables)."""

    timeout_s: float = 20.0
    """Wall time a worker may take (RUNLOOM_PARSE_TIMEOUT_S); it is killed after."""
    memory_mb: int = 1024
    """Address space of a worker (RUNLOOM_PARSE_MEMORY_MB)."""
    workers: int = 2
    """Workers running at once per gateway process (RUNLOOM_PARSE_WORKERS)."""

    @classmethod
    def from_env(cls) -> ParseLimits:
        return cls(
            timeout_s=env_float("RUNLOOM_PARSE_TIMEOUT_S", 20.0),
            memory_mb=int(env_float("RUNLOOM_PARSE_MEMORY_MB", 1024)),
            workers=max(1, int(env_float("RUNLOOM_PARSE_WORKERS", 2))),
        )


class Extracted(msgspec.Struct, kw_only=True):
    title: str = ""
    text: str = ""
    media_type: str = ""
    error: str | None = None
    """Set when the file cannot be read: what a person should do about it."""
    status: int = 422


def bad(detail: str, status: int = 422, title: str = "Invalid document") -> Exception:
    from runloom.gateway.problems import Problem  # not in the worker: it needs no web framework

    return Problem(status, title, detail, type="https://runloom.dev/problems/invalid-document")


def storable(text: str) -> str:
    """`text` without the characters PostgreSQL cannot store (NUL, lone surrogates)."""
    return _UNSTORABLE.sub("", text)


def media_type_of(filename: str) -> str:
    media_type = TYPES.get(PurePath(filename).suffix.lower())
    if media_type is None:
        raise bad(
            f"{filename!r} is not a supported file type; upload .txt, .md, .html or .pdf "
            '(or send JSON {"title", "text"}).',
            status=415,
            title="Unsupported document type",
        )
    return media_type


async def extract(
    filename: str, data: bytes, limits: ParseLimits, slots: asyncio.Semaphore
) -> tuple[str, str, str]:
    """(title, text, media_type) of an uploaded file; Problem for what cannot be read."""
    media_type = media_type_of(filename)
    if media_type in _WORKER_TYPES:
        async with slots:
            out = await _in_worker(filename, data, limits)
    else:
        out = _read(filename, data, media_type)
    if out.error is not None:
        raise bad(out.error, status=out.status)
    return storable(out.title), storable(out.text), out.media_type


_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload(["__main__", "runloom.gateway._extract", "pypdf"])


def warm_up() -> None:
    """Start the forkserver now (seconds on a loaded host) rather than on the first upload."""
    from multiprocessing import forkserver

    forkserver.ensure_running()


async def _in_worker(filename: str, data: bytes, limits: ParseLimits) -> Extracted:
    receiver, sender = _CONTEXT.Pipe(duplex=False)
    proc = _CONTEXT.Process(
        target=_work, args=(sender, filename, data, limits.memory_mb), daemon=True
    )
    try:
        # The first start launches the forkserver: keep that off the event loop.
        await asyncio.to_thread(proc.start)
        sender.close()
        out = await asyncio.wait_for(asyncio.to_thread(_receive, receiver), limits.timeout_s)
    except TimeoutError:
        return Extracted(
            error=f"{filename!r} took longer than {limits.timeout_s:g} s to read and was "
            "given up; upload a simpler or smaller file (or its text as .txt).",
        )
    finally:
        if proc.pid is not None and proc.exitcode is None:
            proc.kill()
        receiver.close()
        if proc.pid is not None:
            await asyncio.to_thread(proc.join, 5)
            proc.close()
    if out is None:
        return Extracted(
            error=f"{filename!r} needs more than {limits.memory_mb} MB to read, or crashed "
            "the reader; upload a simpler or smaller file (or its text as .txt).",
        )
    return msgspec.msgpack.decode(out, type=Extracted)


def _receive(receiver: Connection) -> bytes | None:
    try:
        return receiver.recv_bytes()
    except (EOFError, OSError):  # the worker died (memory) or was killed (time)
        return None


def _work(sender: Connection, filename: str, data: bytes, memory_mb: int) -> None:
    """In the worker: cap the address space, read, send the `Extracted` back."""
    memory = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    try:
        out = _read(filename, data, media_type_of(filename))
    except MemoryError:
        return
    out.title, out.text = storable(out.title), storable(out.text)
    sender.send_bytes(msgspec.msgpack.encode(out))
    sender.close()


def _read(filename: str, data: bytes, media_type: str) -> Extracted:
    """The worker's work (also used in-process for plain text and Markdown)."""
    stem = PurePath(filename).stem or filename
    if media_type == "application/pdf":
        return _read_pdf(filename, stem, data)
    try:
        raw = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return Extracted(error=f"{filename!r} is not UTF-8 text (byte {exc.start} is invalid).")
    if media_type == "text/html":
        parser = _HTMLText()
        parser.feed(raw)
        parser.close()
        title = parser.title.strip() or stem
        return Extracted(title=title, text="".join(parser.parts), media_type=media_type)
    if media_type == "text/markdown":
        for line in raw.splitlines():
            if line.startswith("# "):
                return Extracted(title=line[2:].strip() or stem, text=raw, media_type=media_type)
    return Extracted(title=stem, text=raw, media_type=media_type)


def _read_pdf(filename: str, stem: str, data: bytes) -> Extracted:
    from pypdf import PdfReader

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            return Extracted(
                error=f"{filename!r} is encrypted (password-protected); upload a copy saved "
                "without a password.",
            )
        text = "\n\n".join((page.extract_text() or "") for page in reader.pages)
        title = _pdf_title(reader)
    except MemoryError:
        raise
    except Exception as exc:  # any failure of the parser on these bytes: the file is unreadable
        return Extracted(
            error=f"{filename!r} is not a readable PDF ({type(exc).__name__}: "
            f"{str(exc)[:200]}); export it again, or upload its text.",
        )
    return Extracted(title=title or stem, text=text, media_type="application/pdf")


def _pdf_title(reader: Any) -> str:
    """The metadata title when it is text (a number or a dictionary there is ignored)."""
    try:
        title = reader.metadata.get("/Title") if reader.metadata else None
    except Exception:
        return ""
    return title.strip() if isinstance(title, str) else ""


class _HTMLText(HTMLParser):
    """Visible text of an HTML page (scripts and styles skipped), and its <title>."""

    SKIP = frozenset({"script", "style", "noscript", "template", "svg"})
    BLOCK = frozenset(
        "p div br li ul ol h1 h2 h3 h4 h5 h6 tr pre section article header footer blockquote "
        "table hr".split()
    )

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title = ""
        self._skip = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in self.SKIP:
            self._skip += 1
        elif tag == "title":
            self._in_title = True
        elif tag in self.BLOCK:
            self.parts.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP and self._skip:
            self._skip -= 1
        elif tag == "title":
            self._in_title = False
        elif tag in self.BLOCK:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        if self._in_title:
            self.title += data
            return
        self.parts.append(data)
