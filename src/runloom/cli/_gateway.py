"""The gateway over HTTP and SSE, for the CLI: where it is, the key, errors a person can act on."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx


class CliError(Exception):
    """A failure the user can fix; printed without a traceback."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class Unavailable(CliError):
    """The gateway answered 503 (restarting, or its event store is electing a leader)."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message, code=3)
        self.retry_after_s = retry_after_s


@dataclass(frozen=True, kw_only=True)
class ClientConfig:
    url: str
    """The gateway's base URL."""
    key: str | None
    """The API key, if one was found."""
    key_source: str
    """Where the key came from, to say so when the gateway refuses it."""


def _home() -> Path:
    return Path(os.environ.get("RUNLOOM_HOME", ".runloom"))


def resolve_config(url: str | None, key: str | None) -> ClientConfig:
    """Flags first, then RUNLOOM_URL / RUNLOOM_API_KEY, then the local `.runloom/` folder."""
    home = _home()
    if not url:
        url = os.environ.get("RUNLOOM_URL")
    if not url and (home / "gateway-url").is_file():
        url = (home / "gateway-url").read_text().strip()
    if not url:
        host = os.environ.get("RUNLOOM_GATEWAY_HOST", "127.0.0.1")
        port = os.environ.get("RUNLOOM_GATEWAY_PORT", "8080")
        url = f"http://{host}:{port}"
    source = "--key"
    if not key:
        key, source = os.environ.get("RUNLOOM_API_KEY"), "RUNLOOM_API_KEY"
    if not key and (home / "api-key").is_file():
        key, source = (home / "api-key").read_text().strip(), str(home / "api-key")
    return ClientConfig(url=url.rstrip("/"), key=key or None, key_source=source)


OPENED = "runloom.opened"
"""A pseudo message the stream yields once its response started (the link is up)."""
IDLE = "runloom.idle"
"""A pseudo message for the gateway's heartbeat comment: the run said nothing for a while."""


@dataclass(frozen=True)
class SseMessage:
    event: str
    data: str
    id: str | None


def parse_sse(lines: Iterator[str]) -> Iterator[SseMessage]:
    """Server-sent events from a stream of lines (WHATWG event-stream rules); a comment
    between messages (the gateway's heartbeat) is the pseudo message `IDLE`."""
    event, data, last_id = "", [], None
    for line in lines:
        if line == "":
            if data:
                yield SseMessage(event or "message", "\n".join(data), last_id)
            event, data = "", []
            continue
        if line.startswith(":"):
            if not data and not event:
                yield SseMessage(IDLE, "", None)
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
        elif name == "id" and "\0" not in value:
            last_id = value


class Gateway:
    """A thin client of the public API; every failure becomes a CliError saying what to do."""

    def __init__(self, config: ClientConfig, *, timeout: float = 30.0) -> None:
        self.config = config
        headers = {"User-Agent": "runloom-cli"}
        if config.key:
            headers["Authorization"] = f"Bearer {config.key}"
        self.http = httpx.Client(base_url=config.url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    # -- errors -------------------------------------------------------------------------------

    def unreachable(self) -> CliError:
        return CliError(
            f"Cannot reach the gateway at {self.config.url}. Start it with `make run` "
            "(or `runloom up`), or point --url / RUNLOOM_URL at a running gateway.",
            code=3,
        )

    def failure(self, response: httpx.Response) -> CliError:
        try:
            body = response.json()
        except ValueError:
            body = {}
        detail = (body.get("detail") if isinstance(body, dict) else None) or response.text[:300]
        if response.status_code == 401:
            where = (
                f"the key from {self.config.key_source}"
                if self.config.key
                else "no API key (none in --key, RUNLOOM_API_KEY or .runloom/api-key)"
            )
            return CliError(
                f"The gateway refused {where}: {detail}\nLocally the key is in .runloom/api-key "
                "(printed by `runloom up`); pass it with --key or RUNLOOM_API_KEY.",
                code=4,
            )
        title = body.get("title") if isinstance(body, dict) else None
        message = f"{title or 'Error'} ({response.status_code}): {detail}"
        if response.status_code == 503:
            try:
                retry_after = float(response.headers.get("Retry-After", "1"))
            except ValueError:
                retry_after = 1.0
            return Unavailable(message, min(max(retry_after, 0.0), 30.0))
        return CliError(message)

    # -- requests -----------------------------------------------------------------------------

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise self.unreachable() from exc
        if response.status_code >= 400:
            raise self.failure(response)
        return response.json() if response.content else None

    def download(self, path: str, dest: Path) -> int:
        """Stream a download to `dest`; returns its size."""
        tmp = dest.with_name(dest.name + ".part")
        try:
            with self.http.stream("GET", path, timeout=120) as response:
                if response.status_code >= 400:
                    response.read()
                    raise self.failure(response)
                with tmp.open("wb") as fh:
                    for chunk in response.iter_bytes():
                        fh.write(chunk)
        except httpx.TransportError as exc:
            tmp.unlink(missing_ok=True)
            raise self.unreachable() from exc
        tmp.replace(dest)
        return dest.stat().st_size

    def history(self, run_id: str, after: str | None) -> Iterator[tuple[str, dict[str, Any]]]:
        """Stored events after a cursor, page by page: (cursor, event JSON) in seq order.

        A `reset` item (part of the history is gone) comes as its JSON body with type "reset".
        """
        cursor = after
        while True:
            params: dict[str, Any] = {"format": "json", "limit": 500}
            if cursor:
                params["after"] = cursor
            page = self.request("GET", f"/v1/runs/{run_id}/events", params=params)
            items = page.get("events", [])
            for item in items:
                cursor = item["cursor"]
                yield cursor, item["event"]
            if page.get("done") or len(items) < params["limit"]:
                return

    def stream(self, run_id: str, cursor: str | None) -> Iterator[SseMessage]:
        """The run's SSE stream from a cursor (history, then live, closing after the end).

        Raises httpx.TransportError when the connection drops (the caller resumes).
        """
        headers = {"Accept": "text/event-stream"}
        if cursor:
            headers["Last-Event-ID"] = cursor
        # Reads time out well after the gateway's heartbeats: a silent link counts as dropped.
        timeout = httpx.Timeout(10.0, read=45.0)
        with self.http.stream(
            "GET", f"/v1/runs/{run_id}/events", headers=headers, timeout=timeout
        ) as response:
            if response.status_code >= 400:
                response.read()
                raise self.failure(response)
            yield SseMessage(OPENED, "", None)
            yield from parse_sse(response.iter_lines())
