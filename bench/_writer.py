"""A paced writer in its own process: events carrying their publish time, for latency.

python -m bench._writer <nats_url> <mode: runloom|raw> <rate/s> <seconds> <tenant> <target>...
Targets are run ids (runloom: EventLog appends) or subjects (raw: js.publish).
"""

from __future__ import annotations

import asyncio
import sys
import time

from runloom.contracts.events import StepProgress
from runloom.runtime import bus
from runloom.runtime.eventlog import EventLog
from runloom.runtime.process import tune_gc
from runloom.runtime.telemetry import setup_tracing, work_span

from bench import _env


async def main(url: str, mode: str, rate: float, seconds: float, tenant: str, targets: list[str]):
    nc = await bus.connect(url, "bench-writer", **_env.client())
    js = nc.jetstream()
    log = EventLog(js, "bench/writer")
    per_target = rate / len(targets)

    async def pace(target: str) -> None:
        interval = 1.0 / per_target
        start = time.monotonic()
        with work_span("run bench"):  # a run's root, as the orchestrator's run span
            for i in range(int(per_target * seconds)):
                delay = start + i * interval - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                stamp = f"ts{time.time_ns()}"
                if mode == "raw":
                    await js.publish(target, b'{"data":{"message":"%s"}}' % stamp.encode())
                else:
                    await log.append(
                        run_id=target,
                        tenant_id=tenant,
                        payload=StepProgress(step_id="s", message=stamp),
                    )

    await asyncio.gather(*(pace(t) for t in targets))
    await nc.close()


if __name__ == "__main__":
    url, mode, rate, seconds, tenant, *targets = sys.argv[1:]
    tune_gc()  # as the services do (the orchestrator would be this process)
    setup_tracing("bench-writer")  # their tracer provider too (spans off unless exported)
    asyncio.run(main(url, mode, float(rate), float(seconds), tenant, targets))
