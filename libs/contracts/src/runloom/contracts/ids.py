"""Identifiers: ULIDs (sortable, unique) for events, runs and everything else."""

from __future__ import annotations

import hashlib
import os
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]
"""Every two-digit string, by the 10 bits it encodes."""
_SHIFTS = tuple(range(120, -1, -10))


def ulid(timestamp_ms: int | None = None) -> str:
    """A 26-character Crockford base32 ULID: 48 bits of milliseconds, 80 random bits."""
    ms = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
    return _encode((ms << 80) | int.from_bytes(os.urandom(10), "big"))


def ulid_ms(value: str) -> int:
    """The milliseconds of a ULID (or of a prefixed id, `run_01J...`); 0 if it has none."""
    ms = 0
    try:
        for ch in value.rsplit("_", 1)[-1][:10]:
            ms = ms * 32 + _ALPHABET.index(ch)
    except ValueError:
        return 0
    return ms


def derived_ulid(seed: str) -> str:
    """A ULID fixed by `seed` (an id): the seed's own time, 80 bits of its sha256. The same
    seed always gives the same ULID, so an event named by it is appended once."""
    rnd = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:10], "big")
    return _encode((ulid_ms(seed) << 80) | rnd)


def _encode(value: int) -> str:
    """26 digits, two at a time (a 128-bit value: the first pair carries 8 bits)."""
    return "".join([_PAIRS[(value >> shift) & 1023] for shift in _SHIFTS])


def new_id(prefix: str) -> str:
    """A prefixed ULID, e.g. `run_01J...`. Prefixes name the kind: run, evt, doc, art, res."""
    return f"{prefix}_{ulid()}"
