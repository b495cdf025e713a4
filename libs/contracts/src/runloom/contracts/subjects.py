"""Subject names and stream names: the only place their tokens are spelled.

Every function that builds a subject from a value checks it first (`types.InvalidValue`
otherwise): an id with `*`, `>`, `.` or a space would name other subjects than its own.
"""

from __future__ import annotations

from typing import Literal

from runloom.contracts.kinds import DELIVERABLE_KINDS
from runloom.contracts.types import RUN_ID, check_token

RUN_EVENTS_STREAM = "RUN_EVENTS"
RUN_EVENTS_SUBJECTS = "run.*.events"

COMMANDS_STREAM = "COMMANDS"
COMMANDS_SUBJECTS = "cmd.>"
RUN_COMMANDS = "cmd.run.>"
"""What the orchestrator takes: every run command (start, resume)."""
START_RUN = "cmd.run.start"
RESUME_RUN = "cmd.run.resume"
DRIVE_COMMANDS = "cmd.drive.>"
"""What the orchestrator's drive consumer takes: queued runs handed out by the dispatcher."""
DRIVE_RUN = "cmd.drive.run"
"""A queued run the orchestrators' dispatcher handed out: the replica that takes it works on it."""

JOBS_STREAM = "JOBS"
JOBS_SUBJECTS = "job.>"

DLQ_STREAM = "DEAD_LETTERS"
DLQ_SUBJECTS = "dlq.>"

BILLING_RESERVE = "billing.reserve"
BILLING_COMMIT = "billing.commit"
BILLING_RELEASE = "billing.release"
BILLING_BUDGET_GET = "billing.budget.get"
BILLING_BUDGET_SET = "billing.budget.set"
BILLING_USAGE_RUN = "billing.usage.run"
BILLING_USAGE_RANGE = "billing.usage.range"

CORPUS_ADD = "corpus.add"
CORPUS_LIST = "corpus.list"
CORPUS_DELETE = "corpus.delete"

DELIVERABLES_RUN = "deliverables.run"
DELIVERABLES_ARTIFACT = "deliverables.artifact"

ERASE_SERVICES: tuple[
    Literal["gateway", "orchestrator", "deliverables", "billing", "webhooks"], ...
] = ("gateway", "orchestrator", "deliverables", "billing", "webhooks")
"""Services answering `erase.<service>` (`EraseRequest`): each removes its own rows."""
ERASE_GATEWAY = "erase.gateway"
ERASE_ORCHESTRATOR = "erase.orchestrator"
ERASE_DELIVERABLES = "erase.deliverables"
ERASE_BILLING = "erase.billing"
ERASE_WEBHOOKS = "erase.webhooks"
_ERASE = {
    "gateway": ERASE_GATEWAY,
    "orchestrator": ERASE_ORCHESTRATOR,
    "deliverables": ERASE_DELIVERABLES,
    "billing": ERASE_BILLING,
    "webhooks": ERASE_WEBHOOKS,
}
LIFECYCLE_ERASE = "lifecycle.erase"
"""The gateway asks the lifecycle service to erase a tenant's ended runs (`EraseRunsRequest`)."""
RETENTION_DUE = "retention.due"
"""The lifecycle service asks the gateway which ended runs their tenants' policies let go."""
RUNS_STALLED = "runs.stalled"
"""The orchestrator tells the gateway a run is paused and when it is tried again (core NATS:
it works while the event store is full and takes no appends)."""
ERASURES_BUCKET = "erasures"
"""Key-value bucket of erasure jobs (`runloom.runtime.erasure`, run by the lifecycle service):
progress, what was removed."""
WEBHOOKS_CREATE = "webhooks.endpoint.create"
WEBHOOKS_LIST = "webhooks.endpoint.list"
WEBHOOKS_DELETE = "webhooks.endpoint.delete"
WEBHOOKS_ROTATE = "webhooks.endpoint.rotate"
WEBHOOKS_ENABLE = "webhooks.endpoint.enable"
WEBHOOKS_DELIVERIES = "webhooks.deliveries.list"
WEBHOOKS_REDELIVER = "webhooks.deliveries.redeliver"

ARTIFACTS_BUCKET = "artifacts"
CORPUS_UPLOADS_BUCKET = "corpus-uploads"
"""Document text too large for one request message, named in `AddDocumentRequest.text_object`."""


RUN_EVENTS_ADDRESS = "run.{runId}.events"
"""The run events subject as an AsyncAPI address template."""

DELIVERABLE_JOBS = "job.deliverable.>"
"""Every deliverable job subject (one per kind)."""
DELIVERABLE_JOB_ADDRESS = "job.deliverable.{kind}"
DEAD_LETTER_ADDRESS = "dlq.{stream}.{consumer}"


def run_events(run_id: str) -> str:
    """The subject holding every event of one run (`run_id` must be a valid run id)."""
    return f"run.{RUN_ID.check(run_id)}.events"


def run_id_of(subject: str) -> str:
    """Inverse of `run_events`."""
    parts = subject.split(".")
    if len(parts) != 3 or parts[0] != "run" or parts[2] != "events":
        raise ValueError(f"not a run events subject: {subject!r}")
    return parts[1]


def erase(service: str) -> str:
    """The subject on which `service` erases its own rows (`EraseRequest`)."""
    if service not in _ERASE:
        raise ValueError(f"service {service!r} is not one of {', '.join(ERASE_SERVICES)}")
    return _ERASE[service]


def deliverable_job(kind: str) -> str:
    if kind not in DELIVERABLE_KINDS:
        raise ValueError(f"deliverable kind {kind!r} is not one of {', '.join(DELIVERABLE_KINDS)}")
    return f"job.deliverable.{kind}"


def dead_letter(stream: str, consumer: str) -> str:
    return f"dlq.{check_token(stream, 'stream')}.{check_token(consumer, 'consumer')}"
