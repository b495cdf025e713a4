"""What JetStream's `sync_interval: always` costs against the default, on this machine.

    uv run python tests/foundation/sync_interval_cost.py [messages]

Starts a fresh embedded nats-server per setting, publishes 300-byte messages to a file-storage
stream one at a time (ack latency, rate) and with 64 in flight (rate). The README quotes it.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nats
from runloom.devkit.embedded import NatsServer, free_port

PAYLOAD = b"x" * 300


async def measure(url: str, n: int) -> tuple[float, float, float, float]:
    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(name="SYNC_COST", subjects=["cost.>"])
    latencies = []
    start = time.perf_counter()
    for i in range(n):
        t = time.perf_counter()
        await js.publish(f"cost.{i % 50}", PAYLOAD)
        latencies.append(time.perf_counter() - t)
    sequential = n / (time.perf_counter() - start)
    gate = asyncio.Semaphore(64)

    async def one(i: int) -> None:
        async with gate:
            await js.publish(f"cost.{i % 50}", PAYLOAD)

    start = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    concurrent = n / (time.perf_counter() - start)
    await nc.close()
    latencies.sort()
    p50 = statistics.median(latencies) * 1e3
    p99 = latencies[int(len(latencies) * 0.99)] * 1e3
    return p50, p99, sequential, concurrent


async def main(n: int) -> None:
    print("| sync_interval | ack p50 | ack p99 | sequential msg/s | 64 in flight msg/s |")
    for setting in ("always", "2m"):
        root = Path(tempfile.mkdtemp(prefix="runloom-sync-"))
        server = NatsServer(root, free_port(), sync_interval=setting)
        server.start()
        try:
            p50, p99, seq, conc = await measure(server.url, n)
        finally:
            server.stop()
            shutil.rmtree(root, ignore_errors=True)
        print(f"| `{setting}` | {p50:.2f} ms | {p99:.2f} ms | {seq:,.0f} | {conc:,.0f} |")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 1500))
