"""The webhooks service's identity on the bus (see `runloom.runtime.access`; the nats-server
permissions are generated from this)."""

from __future__ import annotations

from runloom.contracts import subjects
from runloom.runtime.access import Durable, Identity, served_by

DURABLE = "webhooks"
"""The RUN_EVENTS durable of the intake, shared by every replica."""
QUEUE = "webhooks"

IDENTITY = Identity(
    name="webhooks",
    consumes=(Durable(subjects.RUN_EVENTS_STREAM, DURABLE),),
    serves=served_by("webhooks"),
    queue=QUEUE,
    publishes=(subjects.RUN_EVENTS_SUBJECTS,),
    reads=(subjects.RUN_EVENTS_STREAM,),
)
