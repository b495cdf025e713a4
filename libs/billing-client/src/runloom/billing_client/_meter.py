"""Metering: reserve before every provider or tool call, commit or release after.

Owned by billing (this client library is its side of the contract). A caller uses only:

    res = await meter.reserve(run_id=..., tenant_id=..., kind="provider", estimated_usd=...,
                              provider=..., model=..., reservation_id=<deterministic id>)
    ...the call...
    await meter.commit(res, usage, usage_id=<deterministic id>, step_id=...)   # or
    await meter.release(res)

`reserve` raises BudgetExceeded when a budget would be exceeded (the orchestrator then ends the
run with `run.budget_stopped`); while billing does not answer it waits (fail closed), making
the wait visible on the run (`billing.waiting`, then `billing.resumed`). `commit` sends the
real usage to billing, which prices it, and appends `usage.recorded` with that cost.

Every request is idempotent by reservation id on billing's side, so a request whose answer was
lost (timeout, billing killed) is simply sent again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import msgspec
from nats.aio.client import Client as NATS
from runloom.billing_client import _metrics as metrics
from runloom.billing_client._prices import PriceTable, default_prices
from runloom.billing_client._request import BillingUnavailable, MeteringError, ask
from runloom.contracts import operations as ops
from runloom.contracts.commands import (
    CommitRequest,
    ReleaseRequest,
    ReserveReply,
    ReserveRequest,
)
from runloom.contracts.events import (
    BillingResumed,
    BillingWaiting,
    BudgetWarning,
    Usage,
    UsageRecorded,
    payload_of,
)
from runloom.contracts.kinds import UsageKind
from runloom.contracts.operations import Operation
from runloom.contracts.types import now
from runloom.runtime.eventlog import EventLog, RunClosed
from runloom.runtime.retry import Backoff
from runloom.runtime.runstate import fold

log = logging.getLogger(__name__)

Q = TypeVar("Q", bound=msgspec.Struct)
R = TypeVar("R", bound=msgspec.Struct)


class BudgetExceeded(Exception):
    def __init__(self, scope: str, spent_usd: float, budget_usd: float) -> None:
        super().__init__(f"{scope} budget of ${budget_usd:.4f} reached (spent ${spent_usd:.4f})")
        self.scope = scope
        self.spent_usd = spent_usd
        self.budget_usd = budget_usd


@dataclass(frozen=True)
class Reservation:
    reservation_id: str
    run_id: str
    tenant_id: str
    kind: UsageKind
    estimated_usd: float
    provider: str | None = None
    model: str | None = None
    tool: str | None = None


@dataclass
class _Outage:
    """Billing stopped answering a run's requests (one per run at a time)."""

    key: str
    """The reservation id whose request first found billing away: names the events."""
    since: datetime
    started: float
    waiting: asyncio.Task[Any] | None = None


@dataclass(frozen=True, kw_only=True)
class MeterOptions:
    request_timeout_s: float = 5.0
    """How long one request waits for billing's answer (a stopped billing answers "no
    responders" at once; this bounds a hung one)."""
    backoff_initial_s: float = 0.1
    """First pause after billing did not answer; doubled each time."""
    backoff_max_s: float = 2.0
    """Longest pause between attempts (bounds how late a recovery is noticed)."""
    ttl_s: float = 300.0
    """A reservation not settled within this time expires (its caller is presumed gone)."""
    release_give_up_s: float = 10.0
    """A release that cannot reach billing for this long is left to expiry."""


@dataclass
class Meter:
    nc: NATS
    log: EventLog
    prices: PriceTable | None = None
    """Prices for estimates (default: billing's table, RUNLOOM_PRICES_FILE if set)."""
    options: MeterOptions = field(default_factory=MeterOptions)
    _warned: set[tuple[str, str]] = field(default_factory=set, repr=False)
    _outages: dict[str, _Outage] = field(default_factory=dict, repr=False)
    _background: set[asyncio.Task[Any]] = field(default_factory=set, repr=False)
    _answered: dict[str, float] = field(default_factory=dict, repr=False)
    """run_id -> when billing last answered one of its requests (monotonic)."""
    _seen: set[str] = field(default_factory=set, repr=False)
    """Runs this process has had an answer for (an earlier owner's wait was looked at)."""

    def __post_init__(self) -> None:
        if self.prices is None:
            self.prices = default_prices()

    # -- estimates ------------------------------------------------------------------------------

    def estimate_provider(
        self, provider: str, model: str, input_tokens: int, max_output_tokens: int
    ) -> float:
        """Upper bound of a provider call's cost: the prompt plus the longest allowed answer."""
        assert self.prices is not None
        return float(
            self.prices.provider_cost(
                provider, model, max(input_tokens, 0), max(max_output_tokens, 0)
            )
        )

    def estimate_tool(self, tool: str) -> float:
        assert self.prices is not None
        return float(self.prices.tool_cost(tool))

    # -- reserve / commit / release ---------------------------------------------------------------

    async def reserve(
        self,
        *,
        run_id: str,
        tenant_id: str,
        kind: UsageKind,
        estimated_usd: float,
        reservation_id: str,
        provider: str | None = None,
        model: str | None = None,
        tool: str | None = None,
        causation_id: str | None = None,
        ttl_s: float | None = None,
    ) -> Reservation:
        """Hold `estimated_usd` against the run's and the tenant's budget.

        Raises:
            BudgetExceeded: a budget would be exceeded; nothing may be spent.
        Waits (visibly, on the run) while billing does not answer; cancellable at any time.
        """
        if not math.isfinite(estimated_usd) or estimated_usd < 0:
            raise ValueError(f"estimated_usd must be a finite number >= 0, got {estimated_usd!r}")
        request = ReserveRequest(
            reservation_id=reservation_id,
            tenant_id=tenant_id,
            run_id=run_id,
            estimated_usd=estimated_usd,
            kind=kind,
            provider=provider,
            model=model,
            tool=tool,
            ttl_s=ttl_s or self.options.ttl_s,
        )
        try:
            reply = await self._call(
                ops.BILLING_RESERVE,
                request,
                run_id=run_id,
                tenant_id=tenant_id,
                key=reservation_id,
                causation_id=causation_id,
            )
        except asyncio.CancelledError:
            # The request may have landed: free its hold now rather than at expiry.
            self._spawn(self._release_quietly(reservation_id, run_id, tenant_id))
            raise
        assert reply is not None
        for scope in reply.warnings:
            await self._warn(reply, scope, run_id, tenant_id, causation_id)
        if not reply.granted:
            if reply.scope not in ("run", "tenant"):
                raise MeteringError(f"billing refused the reservation: {reply.reason}")
            spent, budget = (
                (reply.run_spent_usd, reply.run_budget_usd)
                if reply.scope == "run"
                else (reply.tenant_spent_usd, reply.tenant_budget_usd)
            )
            metrics.BUDGET_STOPS.labels(reply.scope).inc()
            raise BudgetExceeded(reply.scope, spent, budget or 0.0)
        return Reservation(
            reservation_id, run_id, tenant_id, kind, estimated_usd, provider, model, tool
        )

    async def commit(
        self,
        reservation: Reservation,
        usage: Usage,
        *,
        usage_id: str,
        step_id: str | None = None,
        causation_id: str | None = None,
    ) -> float:
        """Record the actual usage: billing prices it; `usage.recorded` carries the cost."""
        reply = await self._call(
            ops.BILLING_COMMIT,
            CommitRequest(
                reservation_id=reservation.reservation_id,
                tenant_id=reservation.tenant_id,
                run_id=reservation.run_id,
                usage=usage,
                provider=reservation.provider,
                model=reservation.model,
                tool=reservation.tool,
                usage_id=usage_id,
            ),
            run_id=reservation.run_id,
            tenant_id=reservation.tenant_id,
            key=reservation.reservation_id,
            causation_id=causation_id,
        )
        assert reply is not None
        if not reply.ok:
            raise MeteringError(f"billing refused the commit: {reply.error}")
        if not reply.replayed:
            metrics.committed(
                reservation.kind, reservation.provider, reservation.model, reservation.tool,
                usage.input_tokens, usage.output_tokens, reply.cost_usd,
            )  # fmt: skip
        try:
            await self.log.append(
                reservation.run_id,
                reservation.tenant_id,
                UsageRecorded(
                    usage_id=usage_id,
                    kind=reservation.kind,
                    provider=reservation.provider,
                    model=reservation.model,
                    tool=reservation.tool,
                    usage=usage,
                    cost_usd=reply.cost_usd,
                    reservation_id=reservation.reservation_id,
                    step_id=step_id,
                ),
                event_id=f"usage-{usage_id}",
                causation_id=causation_id,
                # The event is appended only after billing committed. A first commit means no
                # earlier attempt got as far as appending, so the scan of the run's history for
                # the event id (which grows with the run) is needed only for a replayed commit.
                check_existing=reply.replayed,
            )
        except RunClosed:
            log.warning(
                "run %s ended before usage %s was recorded on it (committed in billing)",
                reservation.run_id,
                usage_id,
            )
        return reply.cost_usd

    async def release(self, reservation: Reservation) -> None:
        """Free the hold of a reservation that was not spent (e.g. the call failed)."""
        await self._release_quietly(
            reservation.reservation_id, reservation.run_id, reservation.tenant_id
        )

    # -- internals ------------------------------------------------------------------------------

    async def _release_quietly(self, reservation_id: str, run_id: str, tenant_id: str) -> None:
        reply = await self._call(
            ops.BILLING_RELEASE,
            ReleaseRequest(reservation_id=reservation_id, tenant_id=tenant_id, run_id=run_id),
            run_id=run_id,
            tenant_id=tenant_id,
            key=reservation_id,
            give_up_after_s=self.options.release_give_up_s,
        )
        if reply is None:
            log.warning("release of %s did not reach billing; it will expire", reservation_id)

    async def _call(
        self,
        op: Operation[Q, R],
        request: Q,
        *,
        run_id: str,
        tenant_id: str,
        key: str,
        causation_id: str | None = None,
        give_up_after_s: float | None = None,
    ) -> R | None:
        """Request/reply until billing answers. Fail closed: no answer, no spending.

        With `give_up_after_s`, returns None after that long without an answer (and without
        making the wait visible); otherwise waits as long as it takes, visibly on the run.
        """
        backoff = Backoff(
            first_s=self.options.backoff_initial_s, max_s=self.options.backoff_max_s, jitter=0.2
        )
        started = time.monotonic()
        attempt = 0
        while True:
            problem: str
            sent_at = time.monotonic()
            try:
                reply = await ask(
                    self.nc,
                    op,
                    request,
                    timeout_s=self.options.request_timeout_s,
                    message_id=key,
                    conversation_id=run_id,
                )
            except BillingUnavailable as exc:
                problem = exc.problem
            else:
                self._answered[run_id] = time.monotonic()
                if give_up_after_s is None:
                    await self._resumed(run_id, tenant_id, causation_id)
                return reply
            if give_up_after_s is not None:
                if time.monotonic() - started >= give_up_after_s:
                    return None
            elif self._answered.get(run_id, 0.0) > sent_at:
                # Billing answered this run after this request left: a request lost with a
                # replica that died, not a new outage. Send it again without a new wait.
                problem += "; billing has answered since"
            else:
                await self._waiting(run_id, tenant_id, key, problem, causation_id)
            pause = backoff.delay(attempt)
            attempt += 1
            log.info("%s for run %s: %s; retrying in %.2fs", op.subject, run_id, problem, pause)
            await asyncio.sleep(pause)

    async def _waiting(
        self, run_id: str, tenant_id: str, key: str, problem: str, causation_id: str | None
    ) -> None:
        """Make the wait visible on the run, once per outage (whatever the number of callers)."""
        if run_id in self._outages:
            return
        since = now()
        outage = _Outage(key=key, since=since, started=time.monotonic())
        self._outages[run_id] = outage
        outage.waiting = self._spawn(
            self._append_quietly(
                run_id,
                tenant_id,
                BillingWaiting(
                    message=f"Spending is paused: {problem}. The run continues as soon as "
                    "billing answers again; nothing is spent meanwhile.",
                    since=since,
                ),
                event_id=f"billing-waiting-{key}",
                causation_id=causation_id,
            )
        )

    async def _resumed(self, run_id: str, tenant_id: str, causation_id: str | None) -> None:
        outage = self._outages.pop(run_id, None)
        if outage is None:
            if run_id not in self._seen:
                self._seen.add(run_id)
                self._spawn(self._close_inherited_wait(run_id, tenant_id, causation_id))
            return
        self._seen.add(run_id)
        if outage.waiting is not None:  # billing.resumed must follow billing.waiting
            with contextlib.suppress(Exception):
                await asyncio.shield(outage.waiting)
        await self._append_quietly(
            run_id,
            tenant_id,
            BillingResumed(waited_s=round(time.monotonic() - outage.started, 3)),
            event_id=f"billing-resumed-{outage.key}",
            causation_id=causation_id,
        )

    async def _close_inherited_wait(
        self, run_id: str, tenant_id: str, causation_id: str | None
    ) -> None:
        """A replica that died while billing was away left `billing.waiting` open: close it."""
        try:
            last = fold(await self.log.events(run_id)).billing_wait
        except Exception:
            log.exception("could not read run %s for an open billing wait", run_id)
            return
        if last is None:
            return
        key = last.id.removeprefix("billing-waiting-")
        waited = 0.0
        with contextlib.suppress(Exception):
            waiting = payload_of(last)
            if isinstance(waiting, BillingWaiting):
                waited = max(0.0, (now() - waiting.since).total_seconds())
        await self._append_quietly(
            run_id,
            tenant_id,
            BillingResumed(waited_s=round(waited, 3)),
            event_id=f"billing-resumed-{key}",
            causation_id=causation_id,
        )

    async def _warn(
        self,
        reply: ReserveReply,
        scope: str,
        run_id: str,
        tenant_id: str,
        causation_id: str | None,
    ) -> None:
        """`budget.warning` once per run and scope (a deterministic id guards restarts)."""
        if (run_id, scope) in self._warned:
            return
        self._warned.add((run_id, scope))
        spent, budget = (
            (reply.run_spent_usd, reply.run_budget_usd)
            if scope == "run"
            else (reply.tenant_spent_usd, reply.tenant_budget_usd)
        )
        if not budget:
            return
        await self._append_quietly(
            run_id,
            tenant_id,
            BudgetWarning(
                scope=scope,
                spent_usd=spent,
                budget_usd=budget,
                fraction=round(spent / budget, 4),
            ),
            event_id=f"budget-warning-{run_id}-{scope}",
            causation_id=causation_id,
        )

    async def _append_quietly(
        self,
        run_id: str,
        tenant_id: str,
        payload: msgspec.Struct,
        *,
        event_id: str,
        causation_id: str | None,
    ) -> None:
        try:
            await self.log.append(
                run_id,
                tenant_id,
                payload,
                event_id=event_id,
                causation_id=causation_id,
                check_existing=True,
            )
        except RunClosed:
            pass  # the run ended meanwhile: nothing may follow its terminal event
        except Exception:
            log.exception("could not append %s to run %s", event_id, run_id)

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task
