"""The orchestrator's identity on the bus: what it consumes, serves, publishes and asks (see
`runloom.runtime.access`; the nats-server permissions are generated from this)."""

from __future__ import annotations

from runloom.contracts import subjects
from runloom.runtime.access import Durable, Identity, served_by

DURABLE = "orchestrator"
"""The COMMANDS durable of run commands (admission), shared by every replica."""
FILTER = subjects.RUN_COMMANDS
DRIVE_DURABLE = "orchestrator-drive"
"""The COMMANDS durable of queued runs handed out by the dispatcher."""
DRIVE_FILTER = subjects.DRIVE_COMMANDS
QUEUE = "orchestrator"
"""The queue group of its responders (the corpus, its erasure)."""

IDENTITY = Identity(
    name="orchestrator",
    consumes=(
        Durable(subjects.COMMANDS_STREAM, DURABLE),
        Durable(subjects.COMMANDS_STREAM, DRIVE_DURABLE),
    ),
    serves=served_by("orchestrator"),
    queue=QUEUE,
    publishes=(
        subjects.RUN_EVENTS_SUBJECTS,
        subjects.RESUME_RUN,
        subjects.DRIVE_RUN,
        subjects.DELIVERABLE_JOBS,
    ),
    requests=(
        subjects.BILLING_RESERVE,
        subjects.BILLING_COMMIT,
        subjects.BILLING_RELEASE,
        subjects.RUNS_STALLED,
    ),
    listens=(subjects.RUN_EVENTS_SUBJECTS,),
    reads=(subjects.RUN_EVENTS_STREAM,),
    buckets_read=(subjects.CORPUS_UPLOADS_BUCKET,),
    buckets_delete=(subjects.CORPUS_UPLOADS_BUCKET,),
)
