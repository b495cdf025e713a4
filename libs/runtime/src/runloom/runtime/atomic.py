"""JetStream atomic batch publish (ADR-50; nats-server >= 2.12, `allow_atomic` on the stream).

Every message of a batch carries `Nats-Batch-Id` and its `Nats-Batch-Sequence` (1..n); the
last one also `Nats-Batch-Commit: 1`. Only the commit is a request, so a batch costs one round
trip: the server stores all n messages or none, contiguously, and answers with one PubAck that
names the last message's stream sequence. Header checks are made at commit time under the
stream's lock; `Nats-Expected-Last-Subject-Sequence` may only be on the first message.

What nats-server 2.15 answers (checked against the server): a message id already in the
duplicate window (or twice in one batch) rejects the whole batch (10201) instead of acking a
duplicate; a batch that lost a message, or whose first message was refused because too many
batches were open (50 a stream), fails at commit as incomplete (10176) with nothing stored;
a non-clustered file stream stages each batch in a store of its own, which costs a few
milliseconds a batch, so a batch pays off from several messages on.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import uuid
from collections.abc import Sequence
from enum import Enum
from typing import Any

import msgspec
import nats.errors
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import Header as NatsHeader
from nats.js.errors import APIError, NoStreamResponseError

NOT_ENABLED = 10174
"""The stream does not allow atomic publish."""
INCOMPLETE = 10176
"""A message of the batch never reached the stream (or was refused): nothing stored."""
DUPLICATE_MSG_ID = 10201
"""A message id of the batch is already stored (within the duplicate window): nothing stored."""
TOO_MANY_INFLIGHT = 10210
"""Too many batches open on the stream or the server: nothing stored, try again."""
MAX_MESSAGES = 1000
"""The server's default limit of messages in one batch."""


def client_of(js: JetStreamContext) -> NATS:
    """The connection a JetStream context publishes on (nats-py has no public accessor)."""
    nc: NATS = js._nc
    return nc


async def publish_batch(
    js: JetStreamContext,
    subject: str,
    messages: Sequence[tuple[bytes, dict[str, str]]],
    *,
    timeout: float,
) -> Ack:
    """Publish (payload, headers) pairs as one atomic batch; returns the commit's PubAck.

    Raises APIError with the server's code when the batch is refused (nothing is stored), and
    nats' timeout or connection errors when the outcome is unknown.
    """
    if not messages:
        raise ValueError("an atomic batch needs at least one message")
    nc = client_of(js)
    batch_id = uuid.uuid4().hex
    *staged, (payload, headers) = messages
    if staged:
        if nc.is_closed:
            raise nats.errors.ConnectionClosedError
        # The messages before the commit need no reply: their protocol lines go to the
        # connection's outgoing buffer in one piece, ahead of the commit (which flushes it).
        # One `publish` each cost three times as much (subject and header checks per message).
        await nc._send_command(_hpubs(subject, staged, batch_id))
    hdrs = {
        **headers,
        _BATCH_ID: batch_id,
        _BATCH_SEQUENCE: str(len(messages)),
        _BATCH_COMMIT: "1",
    }
    return await publish(js, subject, payload, hdrs, timeout=timeout)


class Ack(msgspec.Struct):
    """A JetStream publish acknowledgement: the fields the event log reads."""

    stream: str = ""
    seq: int = 0
    duplicate: bool = False
    error: dict[str, Any] | None = None


_ack = msgspec.json.Decoder(Ack)


def _time_out(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_exception(nats.errors.TimeoutError())


_tokens = itertools.count()
_NO_RESPONDERS = "503"


async def publish(
    js: JetStreamContext,
    subject: str,
    payload: bytes,
    headers: dict[str, str],
    *,
    timeout: float,
) -> Ack:
    """`js.publish` for a writer that awaits each append: the same request on the
    connection's shared reply subscription, with less made per call (a counter for the
    reply token instead of a NUID and random bytes, one timer handle instead of `wait_for`'s
    future, timer and callbacks, the ack decoded by msgspec instead of `json` and a dataclass).

    Raises APIError with the server's code when the message is refused, and nats' timeout,
    connection or no-responders errors when the outcome is unknown, as `js.publish` does."""
    nc = client_of(js)
    if nc.is_draining_pubs:
        raise nats.errors.ConnectionDrainingError
    if not nc._resp_sub_prefix:
        await nc._init_request_sub()
    prefix = nc._resp_sub_prefix
    assert prefix is not None  # made by `_init_request_sub`
    token = str(next(_tokens))
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()
    responses = nc._resp_map
    responses[token] = future
    try:
        await nc.publish(subject, payload, reply=prefix.decode() + token, headers=headers)
        timer = loop.call_at(loop.time() + timeout, _time_out, future)
        try:
            msg = await future
        finally:
            timer.cancel()
    finally:
        responses.pop(token, None)
    if msg.headers and msg.headers.get(NatsHeader.STATUS) == _NO_RESPONDERS:
        raise NoStreamResponseError
    ack = _ack.decode(msg.data)
    if ack.error is not None:
        APIError.from_error(ack.error)  # raises the error's own class (503, 404, ...)
        raise APIError(**ack.error)
    return ack


def _name(key: str) -> str:
    """A header name as sent (nats-py's own names are `str` enums, formatted by their name)."""
    return key.value if isinstance(key, Enum) else key


_NO_BREAKS = str.maketrans({"\r": " ", "\n": " "})
_BREAK = re.compile("[\r\n]")
_BATCH_ID = NatsHeader.BATCH_ID.value
_BATCH_SEQUENCE = NatsHeader.BATCH_SEQUENCE.value
_BATCH_COMMIT = NatsHeader.BATCH_COMMIT.value


def _hpubs(subject: str, messages: Sequence[tuple[bytes, dict[str, str]]], batch_id: str) -> bytes:
    """NATS `HPUB` protocol lines (no reply subject) for staged messages of a batch: each
    with its headers, the batch id and its sequence (1..n), and its payload.

    A line break in a value would end the header: it becomes a space, as `publish` does.
    Built for thousands of messages a second: the subject and the batch's own header lines
    are formatted once, and a value is rewritten only if it holds a line break."""
    subj = subject.encode()
    batch = f"{_BATCH_ID}: {batch_id}\r\n{_BATCH_SEQUENCE}: "
    out = []
    for i, (payload, headers) in enumerate(messages, 1):
        lines = "".join(
            [
                f"{k if k.__class__ is str else _name(k)}: "
                f"{v.translate(_NO_BREAKS) if _BREAK.search(v) else v}\r\n"
                for k, v in headers.items()
            ]
        )
        head = f"NATS/1.0\r\n{lines}{batch}{i}\r\n\r\n".encode()
        size = len(head)
        out.append(b"HPUB %s %d %d\r\n%s%s\r\n" % (subj, size, size + len(payload), head, payload))
    return b"".join(out)
