"""The webhooks service's tables (schema `webhooks`): endpoints, and one delivery per event.

Durable state is all here, so a restarted replica (or another one) carries on where one
stopped: what is pending, how many attempts each had, when the next one is due.

- `enqueue`: a run event becomes one pending delivery per matching endpoint (idempotent:
  unique per endpoint and event), its body fixed then.
- `claim`: the due heads, leased for a while. A head is the pending delivery with the lowest
  `seq` of its (endpoint, run), so a run's events go out one at a time, in order; and only
  events the intake is past (RUN_EVENTS sequence <= its durable's ack floor), so an earlier
  event of the run still on its way to `enqueue` is never overtaken.
- `settle`: an attempt's outcome: delivered, due again after a backoff, failed once retries
  ran out; the endpoint disabled after failing for long (or at once on 410 Gone).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from runloom.contracts.commands import EraseReply, EraseRequest
from runloom.contracts.ids import new_id
from runloom.contracts.types import now
from runloom.contracts.webhooks import WebhookDelivery, WebhookEndpoint
from runloom.runtime import erasure
from runloom.runtime.retry import Backoff
from runloom.webhooks.sender import Attempt


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """When to try again, when to give up, when to disable an endpoint."""

    backoff: Backoff = field(default_factory=lambda: Backoff(first_s=5, max_s=3600, jitter=0.5))
    """Pause before retry n (after n + 1 failed attempts): 5 s, 10 s, 20 s … 1 h, each 50 % to
    150 % of that (jitter), so endpoints that failed together are not retried together."""
    retry_for_s: float = 26 * 3600.0
    """A delivery is retried until this long after its first attempt, then `failed`."""
    disable_after_s: float = 72 * 3600.0
    """An endpoint with no 2xx answer for this long (while attempts are made) is disabled."""


@dataclass(frozen=True)
class Pending:
    """A delivery to make now, as `enqueue` prepared it."""

    endpoint_id: str
    tenant_id: str
    event_id: str
    event_type: str
    run_id: str
    seq: int
    stream_seq: int
    body: bytes


@dataclass(frozen=True)
class Claimed:
    """A leased delivery with what its attempt needs."""

    id: str
    endpoint_id: str
    url: str
    secrets: tuple[str, ...]
    """Every secret that signs now (the current one, and the previous in its grace period)."""
    event_id: str
    body: bytes
    attempts: int
    first_attempt_at: datetime | None


@dataclass(frozen=True)
class Endpoint:
    """What `enqueue` matches an event against."""

    id: str
    tenant_id: str
    events: frozenset[str]
    run_id: str | None


def endpoint_view(row: Any) -> WebhookEndpoint:
    expires = row["previous_secret_expires_at"]
    return WebhookEndpoint(
        id=row["id"],
        url=row["url"],
        events=list(row["events"]),
        description=row["description"],
        run_id=row["run_id"],
        status=row["status"],
        disabled_reason=row["disabled_reason"],
        disabled_at=row["disabled_at"],
        failing_since=row["failing_since"],
        previous_secret_expires_at=expires if expires and expires > now() else None,
        created_at=row["created_at"],
    )


def delivery_view(row: Any) -> WebhookDelivery:
    pending = row["status"] == "pending"
    return WebhookDelivery(
        id=row["id"],
        endpoint_id=row["endpoint_id"],
        event_id=row["event_id"],
        event_type=row["event_type"],
        run_id=row["run_id"],
        seq=row["seq"],
        status=row["status"],
        attempts=row["attempts"],
        response_status=row["response_status"],
        last_error=row["last_error"],
        last_attempt_at=row["last_attempt_at"],
        next_attempt_at=row["next_attempt_at"] if pending else None,
        delivered_at=row["delivered_at"],
        created_at=row["created_at"],
    )


ERASED_TABLES = (erasure.Owned("webhook_deliveries"), erasure.Owned("webhook_endpoints"))
"""The webhooks' tables holding a tenant's data, in the order an erasure empties them."""


class Store:
    def __init__(self, pool: asyncpg.Pool, retry: RetryPolicy | None = None) -> None:
        self.pool = pool
        self.retry = retry or RetryPolicy()

    async def erase(self, req: EraseRequest) -> EraseReply:
        """`erase.webhooks`: the endpoints and deliveries of the erased runs, or the tenant's."""
        async with self.pool.acquire() as conn:
            return EraseReply(
                removed=await erasure.erase_rows(conn, "webhooks", ERASED_TABLES, req)
            )

    # -- endpoints --------------------------------------------------------------------------

    async def create_endpoint(
        self,
        *,
        endpoint_id: str,
        tenant_id: str,
        url: str,
        events: Sequence[str],
        description: str | None,
        run_id: str | None,
        secret: str,
    ) -> tuple[Any, str] | None:
        """The endpoint and its secret (a retry of the same id gets the stored ones); None if
        the id is another tenant's."""
        row = await self.pool.fetchrow(
            "INSERT INTO webhook_endpoints (id, tenant_id, url, events, description, run_id,"
            " secret) VALUES ($1, $2, $3, $4, $5, $6, $7)"
            " ON CONFLICT (id) DO NOTHING RETURNING *",
            endpoint_id,
            tenant_id,
            url,
            list(dict.fromkeys(events)),
            description,
            run_id,
            secret,
        )
        if row is None:
            row = await self.pool.fetchrow(
                "SELECT * FROM webhook_endpoints WHERE id = $1 AND tenant_id = $2",
                endpoint_id,
                tenant_id,
            )
            if row is None:
                return None
        return row, row["secret"]

    async def endpoints(self, tenant_id: str) -> list[Any]:
        return list(
            await self.pool.fetch(
                "SELECT * FROM webhook_endpoints WHERE tenant_id = $1"
                " ORDER BY created_at DESC, id DESC",
                tenant_id,
            )
        )

    async def delete_endpoint(self, tenant_id: str, endpoint_id: str) -> bool:
        done = await self.pool.execute(
            "DELETE FROM webhook_endpoints WHERE id = $1 AND tenant_id = $2",
            endpoint_id,
            tenant_id,
        )
        return bool(done.endswith(" 1"))

    async def rotate(
        self, tenant_id: str, endpoint_id: str, secret: str, grace_s: float
    ) -> Any | None:
        """A new secret; the current one signs too for `grace_s` more seconds."""
        return await self.pool.fetchrow(
            "UPDATE webhook_endpoints SET previous_secret = secret, secret = $3,"
            " previous_secret_expires_at = now() + make_interval(secs => $4)"
            " WHERE id = $1 AND tenant_id = $2 RETURNING *",
            endpoint_id,
            tenant_id,
            secret,
            grace_s,
        )

    async def enable(self, tenant_id: str, endpoint_id: str) -> Any | None:
        """Enable an endpoint again: its failure streak starts over, and what is pending for it
        is due now (each with a fresh retry window), in order."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "UPDATE webhook_endpoints SET status = 'enabled', disabled_reason = NULL,"
                " disabled_at = NULL, failing_since = NULL"
                " WHERE id = $1 AND tenant_id = $2 RETURNING *",
                endpoint_id,
                tenant_id,
            )
            if row is not None:
                await conn.execute(
                    "UPDATE webhook_deliveries SET next_attempt_at = now(), first_attempt_at = NULL"
                    " WHERE endpoint_id = $1 AND status = 'pending'",
                    endpoint_id,
                )
            return row

    async def matching(self, tenant_ids: Sequence[str]) -> list[Endpoint]:
        rows = await self.pool.fetch(
            "SELECT id, tenant_id, events, run_id FROM webhook_endpoints"
            " WHERE status = 'enabled' AND tenant_id = ANY($1::text[])",
            list(set(tenant_ids)),
        )
        return [
            Endpoint(r["id"], r["tenant_id"], frozenset(r["events"]), r["run_id"]) for r in rows
        ]

    # -- deliveries -------------------------------------------------------------------------

    async def enqueue(self, pending: Sequence[Pending]) -> int:
        """Store deliveries to make; returns how many were new (those already stored, from an
        event delivered twice, are left as they are)."""
        if not pending:
            return 0
        done = await self.pool.execute(
            "INSERT INTO webhook_deliveries (id, endpoint_id, tenant_id, event_id, event_type,"
            " run_id, seq, stream_seq, body)"
            " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],"
            " $6::text[], $7::bigint[], $8::bigint[], $9::bytea[])"
            " ON CONFLICT (endpoint_id, event_id) DO NOTHING",
            [new_id("dlv") for _ in pending],
            [p.endpoint_id for p in pending],
            [p.tenant_id for p in pending],
            [p.event_id for p in pending],
            [p.event_type for p in pending],
            [p.run_id for p in pending],
            [p.seq for p in pending],
            [p.stream_seq for p in pending],
            [p.body for p in pending],
        )
        return int(done.rsplit(" ", 1)[-1])

    async def claim(self, floor: int, limit: int, lease_s: float) -> list[Claimed]:
        """Lease up to `limit` due heads whose event the intake is past (`floor`)."""
        if limit <= 0:
            return []
        rows = await self.pool.fetch(_CLAIM, floor, limit, lease_s)
        return [
            Claimed(
                id=r["id"],
                endpoint_id=r["endpoint_id"],
                url=r["url"],
                secrets=tuple(
                    s
                    for s, valid in (
                        (r["secret"], True),
                        (r["previous_secret"], r["previous_valid"]),
                    )
                    if s and valid
                ),
                event_id=r["event_id"],
                body=bytes(r["body"]),
                attempts=r["attempts"],
                first_attempt_at=r["first_attempt_at"],
            )
            for r in rows
        ]

    async def settle(self, c: Claimed, attempt: Attempt) -> str:
        """Record an attempt; returns the outcome: delivered, retry, failed, disabled."""
        at = now()
        first = c.first_attempt_at or at
        attempts = c.attempts + 1
        async with self.pool.acquire() as conn, conn.transaction():
            if attempt.ok:
                await conn.execute(
                    "UPDATE webhook_deliveries SET status = 'delivered', attempts = $2,"
                    " first_attempt_at = $3, last_attempt_at = $4, delivered_at = $4,"
                    " response_status = $5, last_error = NULL, leased_until = NULL"
                    " WHERE id = $1",
                    c.id,
                    attempts,
                    first,
                    at,
                    attempt.status,
                )
                await conn.execute(
                    "UPDATE webhook_endpoints SET failing_since = NULL WHERE id = $1",
                    c.endpoint_id,
                )
                return "delivered"
            gave_up = (at - first).total_seconds() >= self.retry.retry_for_s
            due = at + timedelta(seconds=self.retry.backoff.delay(attempts - 1))
            await conn.execute(
                "UPDATE webhook_deliveries SET status = $2, attempts = $3, first_attempt_at = $4,"
                " last_attempt_at = $5, next_attempt_at = $6, response_status = $7,"
                " last_error = $8, leased_until = NULL WHERE id = $1",
                c.id,
                "failed" if gave_up else "pending",
                attempts,
                first,
                at,
                due,
                attempt.status,
                (attempt.error or "")[:500],
            )
            since = await conn.fetchval(
                "UPDATE webhook_endpoints SET failing_since = coalesce(failing_since, $2)"
                " WHERE id = $1 RETURNING failing_since",
                c.endpoint_id,
                at,
            )
            reason = None
            if attempt.status == 410:
                reason = (
                    f"The endpoint answered 410 Gone on {at:%Y-%m-%d %H:%M:%S} UTC: it asked "
                    "for no more deliveries."
                )
            elif since is not None and (at - since).total_seconds() >= self.retry.disable_after_s:
                reason = (
                    f"No delivery succeeded since {since:%Y-%m-%d %H:%M:%S} UTC "
                    f"({(at - since).total_seconds() / 3600:.0f} h); last attempt: "
                    f"{attempt.error}"
                )
            if reason is not None:
                await conn.execute(
                    "UPDATE webhook_endpoints SET status = 'disabled', disabled_reason = $2,"
                    " disabled_at = $3 WHERE id = $1 AND status = 'enabled'",
                    c.endpoint_id,
                    reason[:1000],
                    at,
                )
                return "disabled"
            return "failed" if gave_up else "retry"

    async def deliveries(
        self, tenant_id: str, endpoint_id: str, limit: int, status: str | None
    ) -> list[Any] | None:
        """The endpoint's deliveries, newest first (None: the tenant has no such endpoint)."""
        owned = await self.pool.fetchval(
            "SELECT 1 FROM webhook_endpoints WHERE id = $1 AND tenant_id = $2",
            endpoint_id,
            tenant_id,
        )
        if owned is None:
            return None
        return list(
            await self.pool.fetch(
                "SELECT * FROM webhook_deliveries WHERE endpoint_id = $1"
                " AND ($3::text IS NULL OR status = $3)"
                " ORDER BY created_at DESC, run_id, seq DESC LIMIT $2",
                endpoint_id,
                max(1, min(limit, 500)),
                status,
            )
        )

    async def redeliver(self, tenant_id: str, endpoint_id: str, delivery_id: str) -> Any | None:
        """Make a delivery due now, with a fresh retry window (same body, same webhook-id)."""
        return await self.pool.fetchrow(
            "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = now(),"
            " first_attempt_at = NULL, delivered_at = NULL, leased_until = NULL"
            " WHERE id = $1 AND endpoint_id = $2 AND tenant_id = $3 RETURNING *",
            delivery_id,
            endpoint_id,
            tenant_id,
        )

    async def forget(self, older_than_s: float, limit: int = 5000) -> int:
        """Delete up to `limit` settled deliveries (delivered or failed) older than this; returns
        how many. Pending ones are never dropped."""
        done = await self.pool.execute(
            "DELETE FROM webhook_deliveries WHERE id IN (SELECT id FROM webhook_deliveries"
            " WHERE status <> 'pending' AND created_at < now() - make_interval(secs => $1)"
            " LIMIT $2)",
            older_than_s,
            limit,
        )
        return int(done.rsplit(" ", 1)[-1])

    async def oldest_pending_age_s(self) -> float:
        """Age of the oldest delivery still pending for an enabled endpoint (0: none)."""
        age = await self.pool.fetchval(
            "SELECT extract(epoch FROM now() - min(d.created_at)) FROM webhook_deliveries d"
            " JOIN webhook_endpoints e ON e.id = d.endpoint_id"
            " WHERE d.status = 'pending' AND e.status = 'enabled'"
        )
        return float(age or 0.0)

    async def disabled_count(self) -> int:
        n = await self.pool.fetchval(
            "SELECT count(*) FROM webhook_endpoints WHERE status = 'disabled'"
        )
        return int(n or 0)


_CLAIM = """
WITH heads AS (
    SELECT DISTINCT ON (d.endpoint_id, d.run_id)
        d.id, d.next_attempt_at, d.leased_until, d.stream_seq
    FROM webhook_deliveries d
    JOIN webhook_endpoints e ON e.id = d.endpoint_id AND e.status = 'enabled'
    WHERE d.status = 'pending'
    ORDER BY d.endpoint_id, d.run_id, d.seq
), due AS (
    SELECT id FROM heads
    WHERE next_attempt_at <= now() AND stream_seq <= $1
      AND (leased_until IS NULL OR leased_until < now())
    ORDER BY next_attempt_at
    LIMIT $2
), leased AS (
    UPDATE webhook_deliveries d SET leased_until = now() + make_interval(secs => $3)
    FROM due
    WHERE d.id = due.id AND d.status = 'pending' AND d.next_attempt_at <= now()
      AND (d.leased_until IS NULL OR d.leased_until < now())
    RETURNING d.id, d.endpoint_id, d.event_id, d.body, d.attempts, d.first_attempt_at
)
SELECT l.*, e.url, e.secret, e.previous_secret,
       coalesce(e.previous_secret_expires_at > now(), false) AS previous_valid
FROM leased l JOIN webhook_endpoints e ON e.id = l.endpoint_id
"""
