"""The billing service's identity on the bus (see `runloom.runtime.access`; the nats-server
permissions are generated from this)."""

from __future__ import annotations

from runloom.contracts import subjects
from runloom.runtime.access import Durable, Identity

LEDGER_DURABLE = "billing-ledger"
"""The RUN_EVENTS durable of the ledger (usage.recorded)."""
QUEUE = "billing"
SERVES = (
    subjects.BILLING_RESERVE,
    subjects.BILLING_COMMIT,
    subjects.BILLING_RELEASE,
    subjects.BILLING_BUDGET_GET,
    subjects.BILLING_BUDGET_SET,
    subjects.BILLING_USAGE_RUN,
    subjects.BILLING_USAGE_RANGE,
)

IDENTITY = Identity(
    name="billing",
    consumes=(Durable(subjects.RUN_EVENTS_STREAM, LEDGER_DURABLE),),
    serves=SERVES,
    queue=QUEUE,
    publishes=(subjects.RUN_EVENTS_SUBJECTS,),
    reads=(subjects.RUN_EVENTS_STREAM,),
)
