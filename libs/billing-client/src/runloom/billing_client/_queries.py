"""The budget and usage views a caller (the gateway) asks billing for, over request/reply."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from nats.aio.client import Client as NATS
from runloom.billing_client._request import ask
from runloom.contracts import operations as ops
from runloom.contracts.commands import (
    BudgetGetRequest,
    BudgetPeriod,
    BudgetReply,
    BudgetSetRequest,
    RunUsageReply,
    RunUsageRequest,
    UsageGrouping,
    UsageRangeReply,
    UsageRangeRequest,
)


@dataclass(frozen=True)
class BillingQueries:
    """Budgets and usage, answered by billing from its own tables.

    Every call raises `BillingUnavailable` when no billing replica answers within
    `timeout_s` (or billing cannot reach its database), and `MeteringError` when billing
    refuses the request as invalid.
    """

    nc: NATS
    timeout_s: float = 5.0
    """How long one request waits for billing's answer."""

    async def budget(self, tenant_id: str) -> BudgetReply:
        return await ask(
            self.nc,
            ops.BILLING_BUDGET_GET,
            BudgetGetRequest(tenant_id=tenant_id),
            timeout_s=self.timeout_s,
        )

    async def set_budget(
        self, tenant_id: str, amount_usd: float, period: BudgetPeriod = "month"
    ) -> BudgetReply:
        return await ask(
            self.nc,
            ops.BILLING_BUDGET_SET,
            BudgetSetRequest(tenant_id=tenant_id, amount_usd=amount_usd, period=period),
            timeout_s=self.timeout_s,
        )

    async def run_usage(self, tenant_id: str, run_id: str) -> RunUsageReply:
        return await ask(
            self.nc,
            ops.BILLING_USAGE_RUN,
            RunUsageRequest(tenant_id=tenant_id, run_id=run_id),
            timeout_s=self.timeout_s,
            conversation_id=run_id,
        )

    async def usage(
        self, tenant_id: str, start: datetime, end: datetime, group_by: UsageGrouping = "day"
    ) -> UsageRangeReply:
        return await ask(
            self.nc,
            ops.BILLING_USAGE_RANGE,
            UsageRangeRequest(tenant_id=tenant_id, start=start, end=end, group_by=group_by),
            timeout_s=self.timeout_s,
        )
