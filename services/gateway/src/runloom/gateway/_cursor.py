"""SSE cursors: opaque, durable positions in a run's history.

A cursor names the stream epoch (when RUN_EVENTS was created), the run, the event's run seq
and its stream sequence. Within the same epoch the stream sequence positions a replay in
O(1); from another epoch (the stream was reset) only the run seq is trusted.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from runloom.contracts.types import RUN_ID

PREFIX = "c1"
MAX_SEQ = 2**63 - 1
"""No run seq or stream sequence is larger (JetStream counts in unsigned 64 bits)."""


class CursorError(ValueError):
    """A cursor that cannot be used; the message says why, for the client."""


@dataclass(frozen=True)
class Cursor:
    epoch: str
    """The RUN_EVENTS stream's creation time (base 36 milliseconds)."""
    run_id: str
    seq: int
    """The run seq of the last event the client has."""
    stream_seq: int
    """Its stream sequence (0 when unknown)."""

    def encode(self) -> str:
        body = f"{self.epoch}:{self.run_id}:{self.seq}:{self.stream_seq}".encode()
        return PREFIX + base64.urlsafe_b64encode(body).decode().rstrip("=")


def encode(epoch: str, run_id: str, seq: int, stream_seq: int | None) -> str:
    return Cursor(epoch, run_id, seq, stream_seq or 0).encode()


def decode(text: str) -> Cursor:
    """Parse a cursor; raises CursorError for anything that is not one of ours."""
    malformed = CursorError(
        "This cursor is malformed. Send back exactly the `id` of the last event received "
        "(Last-Event-ID), or no cursor for the whole history."
    )
    if not text.startswith(PREFIX) or len(text) > 300:
        raise malformed
    body = text[len(PREFIX) :]
    try:
        parts = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode().split(":")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise malformed from None
    if len(parts) != 4 or not parts[1] or not RUN_ID.matches(parts[1]):
        raise malformed
    if not parts[0].isascii() or not parts[0].isalnum():
        raise malformed
    if not all(p.isascii() and p.isdigit() and len(p) <= 19 for p in parts[2:]):
        raise malformed
    seq, stream_seq = int(parts[2]), int(parts[3])
    if seq > MAX_SEQ or stream_seq > MAX_SEQ:
        raise malformed
    return Cursor(parts[0], parts[1], seq, stream_seq)


def epoch_of(created_ms: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    n = max(created_ms, 0)
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if n == 0:
            return out
