"""The orchestrator's identity on the bus: what it consumes, serves, publishes and asks (see
`runloom.runtime.access`; the nats-server permissions are generated from this)."""

from __future__ import annotations

from runloom.contracts import subjects
from runloom.runtime.access import Durable, Identity

DURABLE = "orchestrator"
"""The COMMANDS durable every replica shares."""
FILTER = "cmd.run.>"
QUEUE = "orchestrator"
"""The queue group of its responders (the corpus)."""
SERVES = (subjects.CORPUS_ADD, subjects.CORPUS_LIST, subjects.CORPUS_DELETE)

IDENTITY = Identity(
    name="orchestrator",
    consumes=(Durable(subjects.COMMANDS_STREAM, DURABLE),),
    serves=SERVES,
    queue=QUEUE,
    publishes=(subjects.RUN_EVENTS_SUBJECTS, subjects.RESUME_RUN, subjects.DELIVERABLE_JOBS),
    requests=(subjects.BILLING_RESERVE, subjects.BILLING_COMMIT, subjects.BILLING_RELEASE),
    listens=(subjects.RUN_EVENTS_SUBJECTS,),
    reads=(subjects.RUN_EVENTS_STREAM,),
    buckets_read=(subjects.CORPUS_UPLOADS_BUCKET,),
    buckets_delete=(subjects.CORPUS_UPLOADS_BUCKET,),
)
