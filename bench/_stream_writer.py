"""A streaming writer in its own process, for (g) and (h): started ahead, told its targets on
stdin, it appends COUNT events of about 300 bytes to each target, then a terminal event.

python -m bench._stream_writer <nats_url> <mode: runloom|raw> <count> <window> <tenant>
stdin: one line of targets (run ids; subjects for raw). stdout: "ready", then "done".

runloom: `EventLog.append`, up to <window> appends of a run waiting at once (as a producer
streaming deltas does), so the log commits them in groups (atomic batches).
raw: awaited `js.publish`, one at a time per target: each stored before the next is sent,
the plain nats-py way to keep a run's order without expectations.
"""

from __future__ import annotations

import asyncio
import sys

from runloom.contracts.events import RunCompleted, StepProgress
from runloom.runtime import bus
from runloom.runtime.eventlog import EventLog
from runloom.runtime.process import tune_gc
from runloom.runtime.telemetry import setup_tracing

from bench import _env

PAD = "x" * 72
"""Makes a stored event about 300 bytes (envelope included)."""
RAW = b'{"data":{"message":"' + b"x" * 276 + b'"}}'
"""A 300-byte raw message."""
RAW_END = b'{"end":true}'


async def main(url: str, mode: str, count: int, window: int, tenant: str) -> None:
    nc = await bus.connect(url, "bench-stream-writer", **_env.client())
    js = nc.jetstream()
    log = EventLog(js, "bench/writer")

    async def runloom(run_id: str) -> None:
        room = asyncio.Semaphore(window)
        tasks: set[asyncio.Task[object]] = set()

        async def one(i: int) -> None:
            try:
                await log.append(run_id, tenant, StepProgress(step_id="s", message=f"{PAD}{i}"))
            finally:
                room.release()

        for i in range(count):
            await room.acquire()
            task = asyncio.create_task(one(i))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
        await log.append(run_id, tenant, RunCompleted())

    async def raw(subject: str) -> None:
        for _ in range(count):
            await js.publish(subject, RAW)
        await js.publish(subject, RAW_END)

    await nc.flush()
    print("ready", flush=True)
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    write = runloom if mode == "runloom" else raw
    await asyncio.gather(*(write(target) for target in line.split()))
    print("done", flush=True)
    await nc.close()


if __name__ == "__main__":
    url, mode, count, window, tenant = sys.argv[1:6]
    tune_gc()  # as the services do (the orchestrator would be this process)
    setup_tracing("bench-writer")  # their tracer provider too (spans off unless exported)
    asyncio.run(main(url, mode, int(count), int(window), tenant))
