"""The deliverables service's identity on the bus (see `runloom.runtime.access`; the
nats-server permissions are generated from this)."""

from __future__ import annotations

from runloom.contracts import subjects
from runloom.runtime.access import Durable, Identity, served_by

DURABLE = "deliverables"
"""The JOBS durable every replica shares."""
FILTER = subjects.DELIVERABLE_JOBS
QUEUE = "deliverables"

IDENTITY = Identity(
    name="deliverables",
    consumes=(Durable(subjects.JOBS_STREAM, DURABLE),),
    serves=served_by("deliverables"),
    queue=QUEUE,
    publishes=(subjects.RUN_EVENTS_SUBJECTS,),
    reads=(subjects.RUN_EVENTS_STREAM,),
    buckets_read=(subjects.ARTIFACTS_BUCKET,),
    buckets_write=(subjects.ARTIFACTS_BUCKET,),
    # Erasure removes its artifacts' objects (`erase.deliverables`): a filtered purge.
    buckets_delete=(subjects.ARTIFACTS_BUCKET,),
)
