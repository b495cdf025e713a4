"""Expires reservations left behind by a crashed caller, so their holds stop blocking budgets."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from runloom.billing.accounts import Accounts

log = logging.getLogger(__name__)


async def sweep(accounts: Accounts, stop: asyncio.Event, every_s: float = 5.0) -> None:
    """Expire due reservations every `every_s` seconds until `stop` is set.

    Any number of replicas may sweep at once: expiring is idempotent, under the same row locks
    as reserve and commit.
    """
    while not stop.is_set():
        try:
            while await accounts.expire_due() > 0:
                pass
        except Exception as exc:  # Postgres away: try again next round
            log.warning("expiry sweep failed: %s", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=every_s)
