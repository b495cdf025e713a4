"""Commands and jobs: messages on work-queue streams, consumed by durable pull consumers."""

from __future__ import annotations

from datetime import date
from typing import Any, Literal

import msgspec
from runloom.contracts.events import Usage
from runloom.contracts.kinds import DeliverableKind, UsageKind
from runloom.contracts.types import ArtifactId, DocumentId, RunId, Usd, UtcTime


class DispatchPolicy(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The tenant's share of the orchestrators, as its quotas stood when the run was accepted."""

    concurrent_runs: int = 8
    """Runs of the tenant working at once; more wait in its queue."""
    weight: float = 1.0
    """The tenant's share when runs of several tenants wait (weighted round-robin)."""


class StartRun(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Sent by the gateway once `run.created` is stored; the orchestrator queues the run in
    its tenant's queue and starts it when the tenant and the platform have room."""

    command_id: str
    run_id: RunId
    tenant_id: str
    causation_id: str | None = None
    dispatch: DispatchPolicy | None = None
    """The tenant's dispatch policy (absent: the defaults)."""


class ResumeRun(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Wakes a paused run (a clarification answered or timed out)."""

    command_id: str
    run_id: RunId
    tenant_id: str
    reason: str
    causation_id: str | None = None


class DriveRun(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Published by the orchestrators' dispatcher when a queued run's turn comes (its tenant's
    weighted round-robin turn and a free slot); the replica that takes it works on the run."""

    command_id: str
    """`drive-<id of the command that queued the run>-<n>`: the n-th dispatch of that queuing
    (a dispatcher that died before its commit dispatches again with the same id: a duplicate)."""
    run_id: RunId
    tenant_id: str
    causation_id: str | None = None
    """The start or resume command that queued the run."""


class DeliverableJob(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Render one deliverable kind of a run's stored content model."""

    job_id: str
    """sha256 of (run_id, kind, content_hash): the same request is the same job."""
    run_id: RunId
    tenant_id: str
    kind: DeliverableKind
    content_hash: str
    formats: list[str] = []
    causation_id: str | None = None


class ReserveRequest(msgspec.Struct, kw_only=True, omit_defaults=True):
    reservation_id: str
    """Idempotency key: the same id reserves once."""
    tenant_id: str
    run_id: RunId
    estimated_usd: Usd
    kind: UsageKind
    provider: str | None = None
    model: str | None = None
    tool: str | None = None
    ttl_s: float = 300.0


class ReserveReply(msgspec.Struct, kw_only=True, omit_defaults=True):
    reservation_id: str
    granted: bool
    scope: str | None = None
    """When refused: which budget (run | tenant)."""
    reason: str | None = None
    run_spent_usd: float = 0.0
    run_budget_usd: float | None = None
    tenant_spent_usd: float = 0.0
    tenant_budget_usd: float | None = None
    warnings: list[str] = []
    """Budgets (run | tenant) that crossed 80% with this reservation."""


class CommitRequest(msgspec.Struct, kw_only=True, omit_defaults=True):
    reservation_id: str
    tenant_id: str
    run_id: RunId
    usage: Usage
    provider: str | None = None
    model: str | None = None
    tool: str | None = None
    usage_id: str | None = None


class CommitReply(msgspec.Struct, kw_only=True, omit_defaults=True):
    reservation_id: str
    ok: bool
    cost_usd: float = 0.0
    error: str | None = None
    price_version: str | None = None
    """Version of the price table the cost was computed with."""
    replayed: bool = False
    """The reservation was already committed: this is the stored answer to a retry."""


class ReleaseRequest(msgspec.Struct, kw_only=True, omit_defaults=True):
    reservation_id: str
    tenant_id: str
    run_id: RunId


class ReleaseReply(msgspec.Struct, kw_only=True, omit_defaults=True):
    reservation_id: str
    ok: bool


BudgetPeriod = Literal["month"]
UsageGrouping = Literal["day", "run", "model"]


class BudgetGetRequest(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The tenant's period budget and this period's spend."""

    tenant_id: str


class BudgetSetRequest(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Set the tenant's budget per period (reservations beyond it are refused from then on)."""

    tenant_id: str
    amount_usd: Usd
    period: BudgetPeriod = "month"


class BudgetReply(msgspec.Struct, kw_only=True, omit_defaults=True):
    amount_usd: float | None = None
    """None: the tenant has no budget."""
    period: BudgetPeriod = "month"
    period_start: date
    spent_usd: float = 0.0
    held_usd: float = 0.0
    remaining_usd: float | None = None
    updated_at: UtcTime | None = None


class RunUsageRequest(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One run's metered calls (only the tenant's own)."""

    tenant_id: str
    run_id: RunId


class UsageTotals(msgspec.Struct, kw_only=True, omit_defaults=True):
    cost_usd: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    tool_calls: int = 0
    calls: int = 0


class UsageItem(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One metered call, as billing's ledger counted it."""

    usage_id: str
    time: UtcTime
    kind: str
    provider: str | None = None
    model: str | None = None
    tool: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    tool_calls: int = 0
    cost_usd: float = 0.0
    step_id: str | None = None
    price_version: str | None = None


class RunUsageReply(msgspec.Struct, kw_only=True, omit_defaults=True):
    run_id: RunId
    held_usd: float = 0.0
    """Reserved and not yet committed."""
    totals: UsageTotals
    items: list[UsageItem] = []


class UsageRangeRequest(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The tenant's spend in [start, end), grouped."""

    tenant_id: str
    start: UtcTime
    end: UtcTime
    group_by: UsageGrouping = "day"


class UsageGroup(msgspec.Struct, kw_only=True, omit_defaults=True):
    key: str
    """The day (YYYY-MM-DD, UTC), the run id, or `provider/model` (`tool:<name>` for tools)."""
    cost_usd: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    tool_calls: int = 0
    calls: int = 0


class UsageRangeReply(msgspec.Struct, kw_only=True, omit_defaults=True):
    total_usd: float = 0.0
    groups: list[UsageGroup] = []


class RunDeliverablesRequest(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Every deliverable job of a run the deliverables service knows (only the tenant's own)."""

    tenant_id: str
    run_id: RunId


class ArtifactView(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One stored artifact: its metadata and where its bytes are in the object store."""

    artifact_id: str
    job_id: str
    run_id: RunId
    kind: DeliverableKind
    format: str
    media_type: str
    file_name: str
    size: int
    sha256: str
    object_name: str
    created_at: UtcTime


class DeliverableJobView(msgspec.Struct, kw_only=True, omit_defaults=True):
    job_id: str
    kind: DeliverableKind
    status: str
    """queued | running | retrying | ready | failed"""
    formats: list[str] = []
    attempts: int = 0
    max_attempts: int | None = None
    error: str | None = None
    retry_at: UtcTime | None = None
    completed_at: UtcTime | None = None
    created_at: UtcTime
    artifacts: list[ArtifactView] = []


class RunDeliverablesReply(msgspec.Struct, kw_only=True, omit_defaults=True):
    jobs: list[DeliverableJobView] = []


class ArtifactRequest(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One artifact of the tenant's, if its job is ready."""

    tenant_id: str
    artifact_id: ArtifactId


class ArtifactReply(msgspec.Struct, kw_only=True, omit_defaults=True):
    artifact: ArtifactView | None = None
    """None: no such ready artifact of this tenant."""


class EraseRequest(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Remove every row (and stored object) a service holds for some runs of a tenant, or for
    the whole tenant; asked of each service on its own `erase.<service>` subject by the
    erasure job (`runloom.runtime.erasure`). Idempotent: asked again, it removes nothing more.

    `inventory` (the gateway only, asked first): revoke the tenant's API keys (whole tenant)
    and answer the runs to erase in `EraseReply.run_ids`, removing nothing yet."""

    erasure_id: str
    tenant_id: str
    run_ids: list[RunId] = []
    whole_tenant: bool = False
    inventory: bool = False


class EraseReply(msgspec.Struct, kw_only=True, omit_defaults=True):
    removed: dict[str, int] = {}
    """What was removed: `<schema>.<table>` (rows) or `bucket:<name>` (objects) to a count."""
    run_ids: list[RunId] = []
    """Inventory: the runs of the request (every run of the tenant for a whole tenant)."""
    open_run_ids: list[RunId] = []
    """Inventory: those not ended yet."""


class EraseRunsRequest(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Erase some ended runs of a tenant everywhere (`lifecycle.erase`): the gateway asks,
    after its own checks (the tenant owns each run, each has ended); the lifecycle service
    opens the erasure job (or resumes it: the same runs are the same job) and runs it."""

    tenant_id: str
    run_ids: list[RunId]


class ErasureReply(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Where an erasure job stands once the lifecycle service has run it as far as it could."""

    erasure_id: str
    status: Literal["done", "unfinished"]
    """`unfinished`: a step could not be done now (`detail` says which and why); the job is
    recorded and is resumed by asking again, or by the lifecycle service's next sweep."""
    runs: int = 0
    removed: dict[str, int] = {}
    """What was removed, by `<schema>.<table>`, `stream:<name>` or `bucket:<name>`."""
    detail: str = ""


class RetentionDueRequest(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Which ended runs have outlived their tenant's retention policy (`retention.due`)."""

    batch: int = 100
    """At most this many runs per tenant, the oldest first."""


class TenantRuns(msgspec.Struct, kw_only=True, omit_defaults=True):
    tenant_id: str
    run_ids: list[RunId]


class RetentionDueReply(msgspec.Struct, kw_only=True, omit_defaults=True):
    due: list[TenantRuns] = []
    """Each tenant with runs to erase now, and those runs (tenants with none are left out)."""


StallReason = Literal["event_store_full"]
"""Why a running run is paused without an event saying so: the event store is full."""


class RunStalledRequest(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A running run is paused and tried again at `retry_at` (`runs.stalled`): the gateway
    shows it on the run until the run's next event is stored."""

    run_id: RunId
    tenant_id: str
    reason: StallReason
    detail: str
    """What happened and what frees the run, in words for the run's watcher."""
    retry_at: UtcTime
    after_seq: int
    """The seq of the run's last stored event: any later event means the run went on."""


class RunStalledReply(msgspec.Struct, kw_only=True, omit_defaults=True):
    shown: bool
    """False when the run has no row yet, has ended, or already went past `after_seq`."""


class DeadLetter(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A message a consumer could not process, with the reason; stored on `dlq.>`."""

    stream: str
    subject: str
    consumer: str
    reason: str
    payload: str
    """The original bytes, decoded as UTF-8 with replacement."""
    headers: dict[str, Any] = {}
    time: UtcTime


# -- the corpus (owned by the orchestrator), request/reply on `corpus.*` -------------------------

MAX_DOCUMENT_CHARS = 2_000_000
"""A document's extracted text may not exceed this (about 400 pages)."""


class CorpusDocument(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One document of a tenant's corpus, as stored."""

    id: str
    title: str
    url: str | None = None
    media_type: str
    origin: str
    """`upload` (the documents API) or `default` (the shipped Python docs)."""
    size_chars: int
    chunk_count: int
    created_at: UtcTime


class AddDocumentRequest(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Store a document's extracted text (idempotent by `document_id`: a retry stores it once)."""

    document_id: DocumentId
    tenant_id: str
    title: str
    media_type: str
    url: str | None = None
    text: str | None = None
    """The text itself, when the request fits in one NATS message."""
    text_object: str | None = None
    """Otherwise the name of an object holding the text (UTF-8) in the `corpus-uploads` bucket."""


class AddDocumentReply(msgspec.Struct, kw_only=True, omit_defaults=True):
    document: CorpusDocument | None = None
    """The stored document (absent when refused)."""
    refused: Literal["invalid", "too_large"] | None = None
    """Why the text was not stored: nothing to index / no title, or over MAX_DOCUMENT_CHARS."""
    detail: str | None = None
    """What to change, in words a person can act on."""


class ListDocumentsRequest(msgspec.Struct, kw_only=True, omit_defaults=True):
    tenant_id: str
    limit: int = 100
    offset: int = 0


class ListDocumentsReply(msgspec.Struct, kw_only=True, omit_defaults=True):
    documents: list[CorpusDocument] = []
    """Newest first."""
    total: int = 0


class DeleteDocumentRequest(msgspec.Struct, kw_only=True, omit_defaults=True):
    tenant_id: str
    document_id: str


class DeleteDocumentReply(msgspec.Struct, kw_only=True, omit_defaults=True):
    deleted: bool
    """False when the tenant has no such document."""


COMMAND_TYPES: dict[str, type[msgspec.Struct]] = {
    "StartRun": StartRun,
    "ResumeRun": ResumeRun,
    "DriveRun": DriveRun,
    "DeliverableJob": DeliverableJob,
    "ReserveRequest": ReserveRequest,
    "ReserveReply": ReserveReply,
    "CommitRequest": CommitRequest,
    "CommitReply": CommitReply,
    "ReleaseRequest": ReleaseRequest,
    "ReleaseReply": ReleaseReply,
    "BudgetGetRequest": BudgetGetRequest,
    "BudgetSetRequest": BudgetSetRequest,
    "BudgetReply": BudgetReply,
    "RunUsageRequest": RunUsageRequest,
    "RunUsageReply": RunUsageReply,
    "UsageRangeRequest": UsageRangeRequest,
    "UsageRangeReply": UsageRangeReply,
    "RunDeliverablesRequest": RunDeliverablesRequest,
    "RunDeliverablesReply": RunDeliverablesReply,
    "ArtifactRequest": ArtifactRequest,
    "ArtifactReply": ArtifactReply,
    "DeadLetter": DeadLetter,
    "EraseRequest": EraseRequest,
    "EraseReply": EraseReply,
    "EraseRunsRequest": EraseRunsRequest,
    "ErasureReply": ErasureReply,
    "RetentionDueRequest": RetentionDueRequest,
    "RetentionDueReply": RetentionDueReply,
    "RunStalledRequest": RunStalledRequest,
    "RunStalledReply": RunStalledReply,
    "TenantRuns": TenantRuns,
    "AddDocumentRequest": AddDocumentRequest,
    "AddDocumentReply": AddDocumentReply,
    "ListDocumentsRequest": ListDocumentsRequest,
    "ListDocumentsReply": ListDocumentsReply,
    "DeleteDocumentRequest": DeleteDocumentRequest,
    "DeleteDocumentReply": DeleteDocumentReply,
}
