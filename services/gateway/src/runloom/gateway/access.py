"""The gateway's identity on the bus: what it consumes, publishes and asks (see
`runloom.runtime.access`; the nats-server permissions are generated from this)."""

from __future__ import annotations

from runloom.contracts import subjects
from runloom.runtime.access import Durable, Identity, asked, served_by

ARCHIVE_DURABLE = "run-archive"
"""The RUN_EVENTS durable of the archive and the runs read model (`store.archive`)."""

IDENTITY = Identity(
    name="gateway",
    consumes=(Durable(subjects.RUN_EVENTS_STREAM, ARCHIVE_DURABLE),),
    serves=served_by("gateway"),
    queue="gateway",
    publishes=(subjects.RUN_EVENTS_SUBJECTS, subjects.START_RUN, subjects.RESUME_RUN),
    requests=(
        subjects.BILLING_BUDGET_GET,
        subjects.BILLING_BUDGET_SET,
        subjects.BILLING_USAGE_RUN,
        subjects.BILLING_USAGE_RANGE,
        *asked("corpus", "deliverables", "webhooks", "lifecycle"),
    ),
    reads=(subjects.RUN_EVENTS_STREAM,),
    buckets_read=(subjects.ARTIFACTS_BUCKET,),
    buckets_write=(subjects.CORPUS_UPLOADS_BUCKET,),
    # Erasure is the lifecycle service's (`lifecycle.erase`): the gateway may not purge a
    # stream, delete a stream's message or write an erasure's record.
)
