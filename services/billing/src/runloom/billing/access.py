"""The billing service's identity on the bus (see `runloom.runtime.access`; the nats-server
permissions are generated from this)."""

from __future__ import annotations

from runloom.contracts import subjects
from runloom.runtime.access import Durable, Identity, served_by

LEDGER_DURABLE = "billing-ledger"
"""The RUN_EVENTS durable of the ledger (usage.recorded)."""
QUEUE = "billing"

IDENTITY = Identity(
    name="billing",
    consumes=(Durable(subjects.RUN_EVENTS_STREAM, LEDGER_DURABLE),),
    serves=served_by("billing"),
    queue=QUEUE,
    publishes=(subjects.RUN_EVENTS_SUBJECTS,),
    reads=(subjects.RUN_EVENTS_STREAM,),
)
