"""(g) one run streamed end to end and (h) 50 runs at once, each beside raw nats-py.

Writers run in processes of their own (where the orchestrator would be), started before the
clock starts and told their targets on stdin. Runloom's side is the whole product path:
`POST /v1/runs`, the event log (group commit), the gateway's SSE; raw nats-py's is awaited
`js.publish` read by ordered JetStream consumers (they see an event once it is stored).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import TYPE_CHECKING

from nats.aio.msg import Msg

from bench._sse import Stream
from bench._stream_writer import RAW_END

if TYPE_CHECKING:
    from bench._scenarios import Bench, Figure

WINDOW = int(os.environ.get("RUNLOOM_BENCH_WINDOW", "1000"))
"""Appends a Runloom writer keeps waiting per run (a streaming producer's in-flight window);
1 awaits each append before the next (how figures before group commit were taken)."""
WRITERS = 2
"""Writer processes in (h), the runs shared among them."""


class Writer:
    """A `bench._stream_writer` process, connected and waiting for its targets."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, b: Bench, mode: str, count: int) -> Writer:
        from bench._scenarios import ROOT, TENANT

        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench._stream_writer",
            b.env.nats_url,
            mode,
            str(count),
            str(WINDOW),
            TENANT,
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        assert line.strip() == b"ready", line
        return cls(proc)

    def go(self, targets: list[str]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((" ".join(targets) + "\n").encode())

    async def finish(self) -> None:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 300)
        assert line.strip() == b"done", line
        assert await self.proc.wait() == 0


async def _stamp(event: asyncio.Event) -> float:
    await event.wait()
    return time.perf_counter()


class _RawReader:
    """Ordered JetStream consumers on raw subjects: counts, first arrival, end markers."""

    def __init__(self, subjects: list[str]) -> None:
        self.subjects = subjects
        self.count = 0
        self.ended = 0
        self.first = asyncio.Event()
        self.done = asyncio.Event()

    async def subscribe(self, b: Bench) -> list[object]:
        async def cb(msg: Msg) -> None:
            self.count += 1
            self.first.set()
            if msg.data == RAW_END:
                self.ended += 1
                if self.ended == len(self.subjects):
                    self.done.set()

        return [
            await b.js.subscribe(s, cb=cb, ordered_consumer=True, pending_msgs_limit=-1)
            for s in self.subjects
        ]


async def one_run(b: Bench) -> tuple[Figure, Figure]:
    """(g): events/s from `POST /v1/runs` to the last event an SSE client got, and the time
    from that POST to the client's first event."""
    from bench._scenarios import Figure

    n = b.n(5000)
    writer = await Writer.start(b, "runloom", n)
    t0 = time.perf_counter()
    (run_id,) = await b.runs(1)
    writer.go([run_id])
    s = Stream()
    await s.open(b.env.port, f"/v1/runs/{run_id}/events", b.env.api_key)
    first = asyncio.create_task(_stamp(s.first))
    await asyncio.wait_for(s.done.wait(), 300)
    ours = s.count / (time.perf_counter() - t0)
    ours_first = (await first - t0) * 1000
    assert s.count == n + 2, f"lost or duplicated events: {s.count} of {n + 2}"
    s.close()
    await writer.finish()

    await b.settle()
    writer = await Writer.start(b, "raw", n)
    subject = f"raw.g.{time.monotonic_ns()}"
    reader = _RawReader([subject])
    t0 = time.perf_counter()
    subs = await reader.subscribe(b)
    writer.go([subject])
    first = asyncio.create_task(_stamp(reader.first))
    await asyncio.wait_for(reader.done.wait(), 300)
    raw = reader.count / (time.perf_counter() - t0)
    raw_first = (await first - t0) * 1000
    await writer.finish()
    for sub in subs:
        await sub.unsubscribe()  # type: ignore[attr-defined]
    label = f"(g) 1 run, {n} events, writer process"
    return (
        Figure(f"{label}: POST -> last event", "events/s", ours, raw),
        Figure(f"{label}: POST -> first event", "ms", ours_first, raw_first, False),
    )


async def many_runs(b: Bench) -> Figure:
    """(h): 50 runs x 500 events, one SSE client each, every writer started together:
    events delivered per second in all."""
    from bench._scenarios import Figure

    runs, n = 50, b.n(500)
    run_ids = await b.runs(runs)
    streams = await b.connect(run_ids, 1)  # each has its run.created already
    writers = [await Writer.start(b, "runloom", n) for _ in range(WRITERS)]
    t0 = time.perf_counter()
    for i, w in enumerate(writers):
        w.go(run_ids[i::WRITERS])
    await asyncio.wait_for(asyncio.gather(*(s.done.wait() for s in streams)), 300)
    ours = runs * (n + 1) / (time.perf_counter() - t0)
    assert all(s.count == n + 2 for s in streams), "lost or duplicated events"
    for s in streams:
        s.close()
    await asyncio.gather(*(w.finish() for w in writers))

    await b.settle()
    subjects = [f"raw.h.{time.monotonic_ns()}.{i}" for i in range(runs)]
    reader = _RawReader(subjects)
    subs = await reader.subscribe(b)
    writers = [await Writer.start(b, "raw", n) for _ in range(WRITERS)]
    t0 = time.perf_counter()
    for i, w in enumerate(writers):
        w.go(subjects[i::WRITERS])
    await asyncio.wait_for(reader.done.wait(), 300)
    raw = reader.count / (time.perf_counter() - t0)
    await asyncio.gather(*(w.finish() for w in writers))
    for sub in subs:
        await sub.unsubscribe()  # type: ignore[attr-defined]
    return Figure(f"(h) {runs} runs x {n} events, {runs} SSE clients", "events/s", ours, raw)
