"""A writer in its own process: appends N step.progress events to a run, then exits.

Usage: python writer_process.py <nats_url> <run_id> <tenant_id> <count> <name>
"""

from __future__ import annotations

import asyncio
import sys

from runloom.contracts.events import StepProgress
from runloom.runtime import bus
from runloom.runtime.eventlog import EventLog


async def main(url: str, run_id: str, tenant: str, count: int, name: str) -> None:
    nc = await bus.connect(url, f"writer-{name}")
    log = EventLog(nc.jetstream(), f"proc/{name}")
    for i in range(count):
        await log.append(run_id, tenant, StepProgress(step_id=name, message=f"{name} {i}"))
    await nc.close()


if __name__ == "__main__":
    url, run_id, tenant, count, name = sys.argv[1:6]
    asyncio.run(main(url, run_id, tenant, int(count), name))
