"""Metering: reserve before every provider or tool call, commit or release after.

Owned by the billing issue. The orchestrator calls only this interface:

    res = await meter.reserve(run_id=..., tenant_id=..., kind="provider", estimated_usd=...,
                              provider=..., model=..., reservation_id=<deterministic id>)
    ...the call...
    await meter.commit(res, usage, usage_id=<deterministic id>, step_id=...)   # or
    await meter.release(res)

`reserve` raises BudgetExceeded when a budget would be exceeded (the orchestrator then ends the
run with `run.budget_stopped`); while billing does not answer it waits (fail closed), making
the wait visible on the run. `commit` appends `usage.recorded` to the run.
"""

from __future__ import annotations

from dataclasses import dataclass

from nats.aio.client import Client as NATS
from runloom.contracts.events import Usage, UsageRecorded
from runloom.runtime.eventlog import EventLog


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
    kind: str
    estimated_usd: float
    provider: str | None = None
    model: str | None = None
    tool: str | None = None


class Meter:
    def __init__(self, nc: NATS, log: EventLog) -> None:
        self.nc = nc
        self.log = log

    def estimate_provider(
        self, provider: str, model: str, input_tokens: int, max_output_tokens: int
    ) -> float:
        return 0.0

    def estimate_tool(self, tool: str) -> float:
        return 0.0

    async def reserve(
        self,
        *,
        run_id: str,
        tenant_id: str,
        kind: str,
        estimated_usd: float,
        reservation_id: str,
        provider: str | None = None,
        model: str | None = None,
        tool: str | None = None,
        causation_id: str | None = None,
    ) -> Reservation:
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
                cost_usd=0.0,
                reservation_id=reservation.reservation_id,
                step_id=step_id,
            ),
            event_id=f"usage-{usage_id}",
            causation_id=causation_id,
            check_existing=True,
        )
        return 0.0

    async def release(self, reservation: Reservation) -> None:
        return None
