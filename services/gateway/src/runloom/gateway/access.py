"""The gateway's identity on the bus: what it consumes, publishes and asks (see
`runloom.runtime.access`; the nats-server permissions are generated from this)."""

from __future__ import annotations

from runloom.contracts import subjects
from runloom.runtime.access import Durable, Identity
from runloom.runtime.archive import DURABLE as ARCHIVE_DURABLE

IDENTITY = Identity(
    name="gateway",
    consumes=(Durable(subjects.RUN_EVENTS_STREAM, ARCHIVE_DURABLE),),
    publishes=(subjects.RUN_EVENTS_SUBJECTS, subjects.START_RUN, subjects.RESUME_RUN),
    requests=(
        subjects.BILLING_BUDGET_GET,
        subjects.BILLING_BUDGET_SET,
        subjects.BILLING_USAGE_RUN,
        subjects.BILLING_USAGE_RANGE,
        subjects.CORPUS_ADD,
        subjects.CORPUS_LIST,
        subjects.CORPUS_DELETE,
        subjects.DELIVERABLES_RUN,
        subjects.DELIVERABLES_ARTIFACT,
    ),
    reads=(subjects.RUN_EVENTS_STREAM,),
    buckets_read=(subjects.ARTIFACTS_BUCKET,),
    buckets_write=(subjects.CORPUS_UPLOADS_BUCKET,),
)
