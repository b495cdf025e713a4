"""Server-sent events for one client: history from its cursor, then live, then close.

Handover without gap or duplicate: the client joins the run's feed first (frames queue up),
replays the stored history, then takes queued frames, dropping seq <= what it already sent.
Any jump in seq (frames dropped while it replayed) sends it back to the log for the missing
part; nothing is ever forwarded with a gap. The stream ends after the terminal event.

`SSEResponse` is a bare ASGI response so the hub can cancel a stalled client's send (a
client that stopped reading blocks in `send` once its TCP window is full).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from runloom.gateway._edge import rate_limit_headers
from runloom.gateway._fanout import Client, Hub
from runloom.gateway._history import Frame, History
from runloom.gateway._server import PUSH
from starlette.responses import Response

log = logging.getLogger(__name__)

BATCH = 64
"""Frames joined into one write when several are ready (replay, or a burst)."""
REREAD_PAUSE_S = 0.1
"""Pause before replaying again when even the leader's replay fell short of the feed."""


class Last(bytes):
    """The stream's last part: `SSEResponse` writes it with the end of the body, one write
    where a part and then the end would be two (a chunked body ends with an empty chunk)."""


HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache, no-transform"),
    (b"x-accel-buffering", b"no"),
]


async def frames(
    hub: Hub,
    history: History,
    client: Client,
    run_id: str,
    after_seq: int,
    after_stream_seq: int,
    heartbeat_s: float,
    render: Callable[[Frame], bytes] = Frame.sse,
    until: Callable[[Frame], bool] = lambda frame: frame.terminal,
) -> AsyncIterator[bytes]:
    """The bytes of one SSE stream: each stored frame as `render` writes it (its stored bytes
    by default; a protocol adapter renders its own), ending after the frame `until` names."""
    yield b"retry: 1000\n\n"
    sent, sent_stream = after_seq, after_stream_seq
    confirm = False
    """Replay on the stream leader's answers (the last replay fell short of the feed)."""
    while True:
        # Replay what the log holds after what was sent (the first time: after the cursor),
        # several frames to a write; the first frame goes at once (the client's first event
        # does not wait for the next ones to be read).
        client.replaying = True
        client.overflowed = False
        batch: list[bytes] = []
        ended = False
        flush_at = 1
        before = sent
        replay = history.replay(
            run_id, sent, sent_stream, any_replica=not confirm, last_seq=client.feed.hwm
        )
        async for frame in replay:
            if chunk := render(frame):
                batch.append(chunk)
            sent, sent_stream = frame.seq, frame.stream_seq
            if until(frame):
                ended = True
                break
            if len(batch) >= flush_at:
                yield b"".join(batch)
                batch = []
                flush_at = BATCH
        if ended:
            yield Last(b"".join(batch))
            return
        if batch:
            yield b"".join(batch)
        with contextlib.suppress(NameError):
            del frame  # the last replayed frame (its own bytes): not kept while idle
        client.replaying = False
        if client.overflowed:
            continue  # frames were dropped while replaying: read them from the log
        if client.feed.ended and sent >= client.feed.hwm:
            return  # the run had ended before; the client has everything
        if sent < client.feed.hwm:
            # The feed has seen more than the replay found: a replica behind the leader
            # answered it (back from a pause or a partition). Read again; after a replay that
            # found nothing new, on the leader's answers.
            if sent == before and confirm:
                await asyncio.sleep(REREAD_PAUSE_S)
            confirm = sent == before
            continue
        confirm = False
        # Live: every frame queued at a wake-up goes out in one write (BATCH at most per write),
        # dropping what was sent. No timer per wait: a keep-alive is due when the client's
        # heartbeat says nothing was written for a period. Frames forwarded as stored may be
        # pushed by the feed while this waits (`Client.offer`, only then): `client.sent` says
        # how far, before and after each wait.
        del batch
        gap = False
        client.heartbeat(heartbeat_s)
        client.live = render is Frame.sse
        try:
            while not gap:
                client.sent, client.sent_stream = sent, sent_stream
                await client.wait()
                sent, sent_stream = client.sent, client.sent_stream
                if client.cut:
                    return
                queued = client.take()
                if not queued:
                    if client.closing:
                        return
                    if client.beat:
                        client.beat = False
                        if client.feed.ended and sent >= client.feed.hwm:
                            return
                        client.wrote = True  # the next one a full period later
                        yield b": keep-alive\n\n"
                    continue
                out: list[bytes] = []
                for i, frame in enumerate(queued):
                    if frame.seq <= sent:
                        continue
                    if frame.seq != sent + 1:
                        gap = True  # a jump: go back to the log for the missing part
                        client.frames[:0] = queued[i:]
                        break
                    if chunk := render(frame):
                        out.append(chunk)
                    sent, sent_stream = frame.seq, frame.stream_seq
                    if until(frame):
                        ended = True
                        break
                    if len(out) >= BATCH:
                        client.wrote = True
                        yield b"".join(out)
                        out = []
                del queued
                if ended:
                    yield Last(b"".join(out))
                    return
                if out:
                    client.wrote = True
                    yield b"".join(out)
                    del out
                if client.closing and not client.frames:
                    return
        finally:
            client.live = False
            client.stop_heartbeat()


class SSEResponse:
    """Streams `body` as text/event-stream; ends on disconnect, cut-off or drain.

    The stream is written from the request's own task; one small task watches for the
    client going away. A disconnect or a cut-off cancels the request task (a stalled client
    may be blocked in `send`), which ends the stream quietly.
    """

    __slots__ = ("body", "client", "finished", "gone", "hub")

    def __init__(self, hub: Hub, client: Client, body: AsyncIterator[bytes]) -> None:
        self.hub = hub
        self.client = client
        self.body = body
        self.finished = False
        self.gone = False

    async def _watch(self, receive: Any) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        release = getattr(self.body, "release", None)
        if release is not None:
            release()  # the client is gone: what it held is free now, not when the task ends
        task, self.client.task = self.client.task, None  # cancelled once, by one of us
        if task is not None and not self.finished:
            self.gone = True
            task.cancel()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.client.task = task
        self.client.push = scope.get("extensions", {}).get(PUSH)
        watch = asyncio.create_task(self._watch(receive))
        try:
            headers = HEADERS + rate_limit_headers(scope)  # also when no middleware ran
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            last = False
            async for chunk in self.body:
                last = chunk.__class__ is Last
                await send({"type": "http.response.body", "body": chunk, "more_body": not last})
                if last:
                    break
            self.finished = True
            if not last:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not (self.gone or self.client.cut):
                raise  # not ours (e.g. the server is shutting down)
            task.uncancel()
        except Exception as exc:
            log.warning("SSE stream failed: %s", exc)
        finally:
            self.finished = True
            self.client.task = None
            watch.cancel()
            with contextlib.suppress(Exception):
                await self.body.aclose()  # type: ignore[attr-defined]
            await self.hub.detach(self.client)


class Raw(Response):
    """A route's answer that hands the request over to a bare ASGI app (an SSE stream)."""

    def __init__(self, app: Any) -> None:
        super().__init__()
        self._app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self._app(scope, receive, send)
