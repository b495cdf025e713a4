"""The web console: static ES modules and CSS served at `/` (no build step).

`/` answers the console's page; its files live under `/console/`. Only these two paths are
claimed, so `/v1`, `/healthz`, `/readyz` and `/docs` are never shadowed. The console's own
tests (`console/tests/`) and anything outside the folder are not served.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from runloom.gateway.problems import Problem

CONSOLE_DIR = (Path(__file__).resolve().parent.parent / "console").resolve()

MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".json": "application/json",
}

# The console talks only to this gateway; artifacts are downloaded as blobs.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
        "form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Revalidate every time (ETag / Last-Modified make that cheap): a new console is seen at once.
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)


def _file(path: Path) -> FileResponse:
    return FileResponse(path, media_type=MEDIA_TYPES[path.suffix], headers=SECURITY_HEADERS)


def resolve(name: str) -> Path | None:
    """The console file for a request path, or None if it is not a servable console file."""
    if "\x00" in name:
        return None
    candidate = (CONSOLE_DIR / name).resolve()
    if not candidate.is_relative_to(CONSOLE_DIR) or not candidate.is_file():
        return None
    relative = candidate.relative_to(CONSOLE_DIR)
    if relative.parts[0] == "tests" or candidate.suffix not in MEDIA_TYPES:
        return None
    return candidate


@router.get("/")
async def index() -> FileResponse:
    return _file(CONSOLE_DIR / "index.html")


@router.get("/console/{name:path}")
async def asset(name: str) -> FileResponse:
    path = resolve(name)
    if path is None:
        raise Problem(404, "Not Found", f"The console has no file {name!r}. Open / to start.")
    return _file(path)
