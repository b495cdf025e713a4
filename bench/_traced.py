"""Children of `python -m bench.tracing`, each with its process's tracing set up from the
environment as a service's is (export on: OTEL_EXPORTER_OTLP_ENDPOINT set; off: unset).

python -m bench._traced writer <nats_url> <mode> <rate/s> <seconds> <tenant> <target>...
python -m bench._traced appends <nats_url> <tenant> <n> <runs> <each> <run_id>...
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from runloom.contracts.events import StepProgress
from runloom.runtime import bus
from runloom.runtime.eventlog import EventLog
from runloom.runtime.telemetry import setup_tracing, work_span

from bench import _env, _writer


async def appends(url: str, tenant: str, n: int, each: int, run_ids: list[str]) -> dict:
    """Ordered appends: n to one run, then `each` to every other run concurrently (per s)."""
    nc = await bus.connect(url, "bench-traced-appends", **_env.client())
    log = EventLog(nc.jetstream(), "bench/appends")

    async def append(run_id: str, count: int) -> None:
        with work_span("run bench"):  # a run's root, as the orchestrator's run span
            for i in range(count):
                await log.append(run_id, tenant, StepProgress(step_id="s", message=f"e{i}"))

    t0 = time.perf_counter()
    await append(run_ids[0], n)
    one = n / (time.perf_counter() - t0)
    many_ids = run_ids[1:]
    t0 = time.perf_counter()
    await asyncio.gather(*(append(r, each) for r in many_ids))
    many = len(many_ids) * each / (time.perf_counter() - t0)
    await nc.close()
    return {"one": one, "many": many}


if __name__ == "__main__":
    exporting = setup_tracing("bench")
    command, *args = sys.argv[1:]
    if command == "writer":
        url, mode, rate, seconds, tenant, *targets = args
        asyncio.run(_writer.main(url, mode, float(rate), float(seconds), tenant, targets))
    else:
        url, tenant, n, each, *run_ids = args
        out = asyncio.run(appends(url, tenant, int(n), int(each), run_ids))
        print(json.dumps({**out, "exporting": exporting}))
    from opentelemetry import trace

    provider = trace.get_tracer_provider()
    if hasattr(provider, "force_flush"):
        provider.force_flush()  # export what is batched: its cost counts
