"""A writer in its own process: appends N step.progress events to a run, then exits.

Usage: python writer_process.py <nats_url> <run_id> <tenant_id> <count> <name> [burst]
With a burst above 1, that many appends at a time wait together (group commit). It connects
with the credential RUNLOOM_NATS_CREDENTIALS names (a writer of run events: the orchestrator's).
"""

from __future__ import annotations

import asyncio
import os
import sys

from runloom.contracts.events import StepProgress
from runloom.runtime import bus
from runloom.runtime.eventlog import EventLog


async def main(url: str, run_id: str, tenant: str, count: int, name: str, burst: int) -> None:
    creds = os.environ.get("RUNLOOM_NATS_CREDENTIALS", "")
    nc = await bus.connect(url, f"writer-{name}", credentials=creds)
    log = EventLog(nc.jetstream(), f"proc/{name}", batch_min=2)
    for start in range(0, count, burst):
        await asyncio.gather(
            *(
                log.append(run_id, tenant, StepProgress(step_id=name, message=f"{name} {i}"))
                for i in range(start, min(start + burst, count))
            )
        )
    await nc.close()


if __name__ == "__main__":
    url, run_id, tenant, count, name = sys.argv[1:6]
    burst = int(sys.argv[6]) if len(sys.argv) > 6 else 1
    asyncio.run(main(url, run_id, tenant, int(count), name, burst))
