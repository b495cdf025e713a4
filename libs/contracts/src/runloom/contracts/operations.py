"""Request/reply operations: the one table of what a service may ask another over core NATS.

Each `Operation` names its subject, the contract type of its request and of its reply, the
service that answers, how long an asker waits by default and the errors a reply may carry.
The answering service serves it (`runtime.responder.Route(op, handler)`), every asker sends it
through the one requester (`runtime.request.ask`), and the AsyncAPI document is generated from
it: a subject and its (request, reply) pair are written here and nowhere else.

A reply is either the reply type, or an empty body with the `Runloom-Error` header:
`unavailable` when the answering service could not serve now (its database is away: retry
later), or the reason the request was refused as invalid (`refused`: do not retry). No answer at
all (no replica running, none within the timeout) is the requester's to report.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Generic, Literal, TypeVar

import msgspec
from runloom.contracts import subjects
from runloom.contracts.commands import (
    AddDocumentReply,
    AddDocumentRequest,
    ArtifactReply,
    ArtifactRequest,
    BudgetGetRequest,
    BudgetReply,
    BudgetSetRequest,
    CommitReply,
    CommitRequest,
    DeleteDocumentReply,
    DeleteDocumentRequest,
    EraseReply,
    EraseRequest,
    EraseRunsRequest,
    ErasureReply,
    ListDocumentsReply,
    ListDocumentsRequest,
    ReleaseReply,
    ReleaseRequest,
    ReserveReply,
    ReserveRequest,
    RetentionDueReply,
    RetentionDueRequest,
    RunDeliverablesReply,
    RunDeliverablesRequest,
    RunStalledReply,
    RunStalledRequest,
    RunUsageReply,
    RunUsageRequest,
    UsageRangeReply,
    UsageRangeRequest,
)
from runloom.contracts.webhooks import (
    CreateWebhookReply,
    CreateWebhookRequest,
    DeleteWebhookReply,
    DeleteWebhookRequest,
    EnableWebhookReply,
    EnableWebhookRequest,
    ListDeliveriesReply,
    ListDeliveriesRequest,
    ListWebhooksReply,
    ListWebhooksRequest,
    RedeliverReply,
    RedeliverRequest,
    RotateWebhookSecretReply,
    RotateWebhookSecretRequest,
)

Q = TypeVar("Q", bound=msgspec.Struct)
R = TypeVar("R", bound=msgspec.Struct)

ReplyError = Literal["unavailable", "refused"]
"""What a reply's `Runloom-Error` says: retry later, or never (the request is invalid)."""
UNAVAILABLE: Final = "unavailable"
"""The `Runloom-Error` value of a request the answering service could not serve now."""

Answerer = Literal["billing", "orchestrator", "deliverables", "webhooks", "gateway", "lifecycle"]
"""The service that answers an operation (in its queue group: one replica per request)."""


@dataclass(frozen=True)
class Operation(Generic[Q, R]):
    """One request/reply subject and its contract."""

    group: Literal[
        "billing", "corpus", "deliverables", "webhooks", "erase", "lifecycle", "retention", "runs"
    ]
    verb: str
    subject: str
    request: type[Q]
    reply: type[R]
    answered_by: Answerer
    summary: str
    timeout_s: float
    """How long an asker waits for the answer unless it says otherwise."""
    errors: tuple[ReplyError, ...] = ("unavailable", "refused")

    @property
    def name(self) -> str:
        """The operation's name in the AsyncAPI document (`billingReserve`)."""
        return self.group + self.verb[0].upper() + self.verb[1:]


_IDEMPOTENT = "(idempotent by reservation id)"
_VIEWS = "(the gateway's budget and usage views)"
_BILLING_S = 5.0

BILLING_RESERVE = Operation(
    "billing", "reserve", subjects.BILLING_RESERVE, ReserveRequest, ReserveReply, "billing",
    f"Billing answers a reserve request {_IDEMPOTENT}.", _BILLING_S,
)  # fmt: skip
BILLING_COMMIT = Operation(
    "billing", "commit", subjects.BILLING_COMMIT, CommitRequest, CommitReply, "billing",
    f"Billing answers a commit request {_IDEMPOTENT}.", _BILLING_S,
)  # fmt: skip
BILLING_RELEASE = Operation(
    "billing", "release", subjects.BILLING_RELEASE, ReleaseRequest, ReleaseReply, "billing",
    f"Billing answers a release request {_IDEMPOTENT}.", _BILLING_S,
)  # fmt: skip
BILLING_BUDGET_GET = Operation(
    "billing", "budgetGet", subjects.BILLING_BUDGET_GET, BudgetGetRequest, BudgetReply, "billing",
    f"Billing answers {subjects.BILLING_BUDGET_GET} {_VIEWS}.", _BILLING_S,
)  # fmt: skip
BILLING_BUDGET_SET = Operation(
    "billing", "budgetSet", subjects.BILLING_BUDGET_SET, BudgetSetRequest, BudgetReply, "billing",
    f"Billing answers {subjects.BILLING_BUDGET_SET} {_VIEWS}.", _BILLING_S,
)  # fmt: skip
BILLING_USAGE_RUN = Operation(
    "billing", "usageRun", subjects.BILLING_USAGE_RUN, RunUsageRequest, RunUsageReply, "billing",
    f"Billing answers {subjects.BILLING_USAGE_RUN} {_VIEWS}.", _BILLING_S,
)  # fmt: skip
BILLING_USAGE_RANGE = Operation(
    "billing", "usageRange", subjects.BILLING_USAGE_RANGE, UsageRangeRequest, UsageRangeReply,
    "billing", f"Billing answers {subjects.BILLING_USAGE_RANGE} {_VIEWS}.", _BILLING_S,
)  # fmt: skip

CORPUS_ADD = Operation(
    "corpus", "add", subjects.CORPUS_ADD, AddDocumentRequest, AddDocumentReply, "orchestrator",
    "The orchestrator stores a document (idempotent by document id).",
    60.0,  # storing 2,000,000 characters (chunks and their index) takes seconds, not minutes
)  # fmt: skip
CORPUS_LIST = Operation(
    "corpus", "list", subjects.CORPUS_LIST, ListDocumentsRequest, ListDocumentsReply,
    "orchestrator", "The orchestrator lists a tenant's documents.", 10.0,
)  # fmt: skip
CORPUS_DELETE = Operation(
    "corpus", "delete", subjects.CORPUS_DELETE, DeleteDocumentRequest, DeleteDocumentReply,
    "orchestrator", "The orchestrator deletes a document and its passages.", 10.0,
)  # fmt: skip

DELIVERABLES_RUN = Operation(
    "deliverables", "run", subjects.DELIVERABLES_RUN, RunDeliverablesRequest,
    RunDeliverablesReply, "deliverables",
    "The deliverables service lists the jobs it knows of a run.",
    2.0,  # a listing goes without (the read model alone) rather than wait
)  # fmt: skip
DELIVERABLES_ARTIFACT = Operation(
    "deliverables", "artifact", subjects.DELIVERABLES_ARTIFACT, ArtifactRequest, ArtifactReply,
    "deliverables", "The deliverables service describes one ready artifact.", 2.0,
)  # fmt: skip

_WEBHOOKS_S = 10.0  # creating an endpoint resolves its host before it is stored

WEBHOOKS_CREATE = Operation(
    "webhooks", "create", subjects.WEBHOOKS_CREATE, CreateWebhookRequest, CreateWebhookReply,
    "webhooks", "The webhooks service checks the URL and stores an endpoint.", _WEBHOOKS_S,
)  # fmt: skip
WEBHOOKS_LIST = Operation(
    "webhooks", "list", subjects.WEBHOOKS_LIST, ListWebhooksRequest, ListWebhooksReply,
    "webhooks", "The webhooks service lists a tenant's endpoints.", _WEBHOOKS_S,
)  # fmt: skip
WEBHOOKS_DELETE = Operation(
    "webhooks", "delete", subjects.WEBHOOKS_DELETE, DeleteWebhookRequest, DeleteWebhookReply,
    "webhooks", "The webhooks service deletes an endpoint.", _WEBHOOKS_S,
)  # fmt: skip
WEBHOOKS_ROTATE = Operation(
    "webhooks", "rotate", subjects.WEBHOOKS_ROTATE, RotateWebhookSecretRequest,
    RotateWebhookSecretReply, "webhooks", "The webhooks service rotates an endpoint's secret.",
    _WEBHOOKS_S,
)  # fmt: skip
WEBHOOKS_ENABLE = Operation(
    "webhooks", "enable", subjects.WEBHOOKS_ENABLE, EnableWebhookRequest, EnableWebhookReply,
    "webhooks", "The webhooks service enables a disabled endpoint again.", _WEBHOOKS_S,
)  # fmt: skip
WEBHOOKS_DELIVERIES = Operation(
    "webhooks", "deliveries", subjects.WEBHOOKS_DELIVERIES, ListDeliveriesRequest,
    ListDeliveriesReply, "webhooks", "The webhooks service lists an endpoint's deliveries.",
    _WEBHOOKS_S,
)  # fmt: skip
WEBHOOKS_REDELIVER = Operation(
    "webhooks", "redeliver", subjects.WEBHOOKS_REDELIVER, RedeliverRequest, RedeliverReply,
    "webhooks", "The webhooks service sends one delivery again.", _WEBHOOKS_S,
)  # fmt: skip

LIFECYCLE_ERASE = Operation(
    "lifecycle", "erase", subjects.LIFECYCLE_ERASE, EraseRunsRequest, ErasureReply, "lifecycle",
    "The lifecycle service erases a tenant's ended runs everywhere, as one resumable job "
    "(asked again, it resumes; done, it removes nothing more).",
    60.0,  # every step of the job: the streams' scans and each service's rows
)  # fmt: skip
RETENTION_DUE = Operation(
    "retention", "due", subjects.RETENTION_DUE, RetentionDueRequest, RetentionDueReply,
    "gateway", "The gateway names the ended runs older than their tenant's retention policy.",
    10.0,
)  # fmt: skip

RUNS_STALLED = Operation(
    "runs", "stalled", subjects.RUNS_STALLED, RunStalledRequest, RunStalledReply, "gateway",
    "The gateway shows a running run as paused (why, and when it is tried again) until the "
    "run's next event is stored.",
    2.0,
)  # fmt: skip

ERASE: dict[Answerer, Operation[EraseRequest, EraseReply]] = {
    service: Operation(
        "erase",
        service,
        subjects.erase(service),
        EraseRequest,
        EraseReply,
        service,
        f"The {service} service removes its own rows (and stored objects) of erased runs or "
        "of a whole tenant (idempotent).",
        60.0,  # a tenant's corpus is thousands of rows
    )
    for service in subjects.ERASE_SERVICES
}
"""`erase.<service>`: each service erases its own data (`runtime.erasure`)."""

OPERATIONS: tuple[Operation[Any, Any], ...] = (
    BILLING_RESERVE,
    BILLING_COMMIT,
    BILLING_RELEASE,
    BILLING_BUDGET_GET,
    BILLING_BUDGET_SET,
    BILLING_USAGE_RUN,
    BILLING_USAGE_RANGE,
    CORPUS_ADD,
    CORPUS_LIST,
    CORPUS_DELETE,
    DELIVERABLES_RUN,
    DELIVERABLES_ARTIFACT,
    WEBHOOKS_CREATE,
    WEBHOOKS_LIST,
    WEBHOOKS_DELETE,
    WEBHOOKS_ROTATE,
    WEBHOOKS_ENABLE,
    WEBHOOKS_DELIVERIES,
    WEBHOOKS_REDELIVER,
    *ERASE.values(),
    LIFECYCLE_ERASE,
    RETENTION_DUE,
    RUNS_STALLED,
)
"""Every request/reply operation, in the order the AsyncAPI document lists them."""
