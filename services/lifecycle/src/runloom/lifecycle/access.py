"""The lifecycle service's identity on the bus (see `runloom.runtime.access`; the nats-server
permissions are generated from this).

It alone (beside `admin`) may purge `RUN_EVENTS` (a permission cannot name the purge's filter:
this is the power to purge the whole stream, so it belongs to a process no client reaches),
delete messages of the streams an erasure scans, and write the erasure jobs' bucket. It asks
each service to erase its own rows and the gateway which runs are due; it answers only
`lifecycle.erase`. It reads no run's events and publishes none.
"""

from __future__ import annotations

from runloom.contracts import subjects
from runloom.runtime.access import Identity, asked, served_by
from runloom.runtime.erasure import SCANNED_STREAMS

QUEUE = "lifecycle"
"""The queue group of its responder (`lifecycle.erase`: one replica per request)."""

IDENTITY = Identity(
    name="lifecycle",
    serves=served_by("lifecycle"),
    queue=QUEUE,
    requests=asked("retention", erase=True),
    purges=(subjects.RUN_EVENTS_STREAM,),
    deletes_from=SCANNED_STREAMS,
    kv=(subjects.ERASURES_BUCKET,),
)
