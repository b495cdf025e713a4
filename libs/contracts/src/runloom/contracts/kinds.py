"""Closed sets of wire names as `Literal` types: codegen turns each into a JSON Schema `enum`,
a TypeScript union and an AsyncAPI enum, so no reader spells them again."""

from __future__ import annotations

from typing import Literal, get_args

DeliverableKind = Literal["report", "website", "slides"]
"""What a run can deliver (each renders to several formats)."""
DELIVERABLE_KINDS: tuple[DeliverableKind, ...] = get_args(DeliverableKind)

DEFAULT_SKILL = "research_report"
"""The skill a run follows when its request names none (the one skill the orchestrator has)."""

StepKind = Literal["research", "write", "deliver"]
"""What a plan step does (`PlanStep.kind`)."""
STEP_KINDS: tuple[StepKind, ...] = get_args(StepKind)

UsageKind = Literal["provider", "tool"]
"""What a metered call was."""

RunStatus = Literal[
    "created",
    "queued",
    "running",
    "waiting_clarification",
    "completed",
    "failed",
    "cancelled",
    "budget_stopped",
]
"""A run's status, as every fold of its events derives it."""
RUN_STATUSES: tuple[RunStatus, ...] = get_args(RunStatus)

QueueReason = Literal["tenant_concurrency", "platform_busy"]
"""Why a run waits to start: its tenant already has its concurrent runs working, or every
orchestrator slot of the platform is taken."""

TERMINAL_STATUS: dict[str, RunStatus] = {
    "run.completed": "completed",
    "run.failed": "failed",
    "run.cancelled": "cancelled",
    "run.budget_stopped": "budget_stopped",
}
"""The status each terminal event type leaves a run in."""
