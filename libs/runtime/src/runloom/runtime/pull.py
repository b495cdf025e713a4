"""Fetching a batch from a pull consumer without a task per message.

nats-py's `PullSubscription.fetch(n)` waits for each of the n messages with `next_msg`, which
makes a task, a timeout and a uuid per message: for a consumer taking hundreds of messages a
batch (the archive) that was a large part of its cost per message. `fetch` asks the server
for what is there (a no-wait request: its answer ends with a status when it has fewer), takes
every message already received in one go, and waits again only while the answer is not over;
when nothing is there, it waits up to `timeout` for one message (a request for one, so no
request is left open on the server), then asks for the rest of the batch the same way.
`answered` is called as each answer of the server comes (a message, or a status saying nothing
is there or the request expired): a fetch that ends in a timeout with no call was not answered
at all (the consumer's proof of life).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import StatusCode
from nats.js.errors import APIError

_OVER = frozenset(
    s.value for s in (StatusCode.NO_MESSAGES, StatusCode.REQUEST_TIMEOUT, StatusCode.CONFLICT)
)
"""Statuses that end a pull request: nothing (more) there, expired, or refused for now (409:
too many waiting requests, leadership change, ...; the next fetch asks again)."""


async def fetch(
    psub: Any, batch: int, timeout: float, answered: Callable[[], None] = lambda: None
) -> list[Msg]:
    """Up to `batch` messages of the pull subscription `psub`, at least one, or
    `nats.errors.TimeoutError` when none came within `timeout` seconds; `answered()` at each
    answer of the server."""
    sub = psub._sub
    queue = sub._pending_queue
    msgs: list[Msg] = []
    while len(msgs) < batch and not queue.empty():  # delivered for an earlier request
        msg = queue.get_nowait()
        sub._pending_size -= len(msg.data)
        if JetStreamContext.is_status_msg(msg) is None:
            msgs.append(msg)
    if msgs:
        answered()
    deadline = time.monotonic() + timeout
    if len(msgs) < batch:
        await _request(psub, {"batch": batch - len(msgs), "no_wait": True})
        await _collect(sub, msgs, batch, deadline, answered)
    if msgs:
        return msgs
    # Nothing there: wait for one message (a request for one is over when it comes, so none
    # is left open), then take what else is there by then.
    remaining = deadline - time.monotonic()
    if remaining <= 0.01:
        raise nats.errors.TimeoutError
    await _request(psub, {"batch": 1, "expires": int((remaining - 0.01) * 1e9)})
    await _collect(sub, msgs, 1, deadline, answered)
    if not msgs:
        raise nats.errors.TimeoutError
    if batch > 1:
        await _request(psub, {"batch": batch - 1, "no_wait": True})
        await _collect(sub, msgs, batch, deadline, answered)
    return msgs


async def _request(psub: Any, request: dict[str, Any]) -> None:
    await psub._nc.publish(psub._nms, json.dumps(request).encode(), psub._deliver)


async def _collect(
    sub: Any, msgs: list[Msg], batch: int, deadline: float, answered: Callable[[], None]
) -> None:
    """Take answers into `msgs` until it holds `batch`, the request is over, or the deadline
    passes; waiting only when nothing is queued."""
    queue = sub._pending_queue
    while len(msgs) < batch:
        if queue.empty():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            try:
                msg = await sub.next_msg(timeout=remaining)
            except nats.errors.TimeoutError:
                return
        else:
            msg = queue.get_nowait()
            sub._pending_size -= len(msg.data)
        status = JetStreamContext.is_status_msg(msg)
        if status is None:
            msgs.append(msg)
            answered()
        elif status in _OVER:
            answered()
            return
        elif status != StatusCode.CONTROL_MESSAGE.value and not msgs:
            raise APIError.from_msg(msg)
