"""(j) many SSE clients of one run on one gateway process, beside raw nats-py.

N clients (10,000 at scale 1) follow one run; a writer in its own process appends 10 events a
second, each carrying the time it was stamped. For each event, the time from that stamp to
the LAST client's receipt of it (the slowest of the N), p50 and p99 over the events; and the
gateway's RSS per client. One run rather than several: the question is what one gateway
process does for one run's audience (a run shown on a large screen, a broadcast), where every
event is N writes at once; many runs with few clients each is (b).

Memory per client is the marginal cost: RSS growth from the first fifth of the clients to all
of them, divided by the clients added. Figures measured before (j) in the same round leave
freed heap that the first clients reuse (figure (e) alone holds 2,000 clients); past them,
growth is what each further client costs.

Raw nats-py: the same writer's awaited `js.publish` read by ONE ordered JetStream consumer in
this process (it sees a message once stored, as the gateway does): the floor under any fan-out,
so the ratio is what reaching N clients adds. (N core subscriptions on one connection were
tried: at 100,000 callbacks a second one Python process falls behind and the server drops
messages.) Memory: `bench._rawmem`'s RSS per idle core subscription.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import TYPE_CHECKING, Any

import psutil
from nats.aio.msg import Msg
from runloom.contracts.events import RunCompleted

if TYPE_CHECKING:
    from bench._scenarios import Bench, Figure

CLIENTS = 10_000
"""SSE clients at scale 1."""
RATE = 10.0
"""Events appended per second."""
SECONDS = 20.0
"""How long the writer appends at scale 1 (200 events); at least 3 s at any scale."""
PROCESSES = 4
"""Client processes the clients are spread over (`bench._sse_clients`)."""
FILES_SPARE = 1024
"""Open files a process needs besides its clients' sockets (NATS, PostgreSQL, logs, pipes)."""


def files_needed(scale: float) -> int:
    """Open files the bench process (and the gateway, which inherits its limit) must hold."""
    return max(1, int(CLIENTS * scale)) + FILES_SPARE


class Arrivals:
    """Per stamped event: the latest receipt (ns) and how many clients received it."""

    def __init__(self) -> None:
        self.last: dict[int, int] = {}
        self.count: dict[int, int] = {}

    def __call__(self, stamp: int, now: int) -> None:
        if now > self.last.get(stamp, 0):
            self.last[stamp] = now
        self.count[stamp] = self.count.get(stamp, 0) + 1

    def latencies(self) -> list[float]:
        """Stamp -> last receipt, ms, one per event."""
        return [(last - stamp) / 1e6 for stamp, last in self.last.items()]

    def complete(self, clients: int) -> bool:
        return all(c >= clients for c in self.count.values())


async def many_clients(b: Bench) -> tuple[Figure, ...]:
    from bench._scenarios import Figure, _pct

    n = b.n(CLIENTS)
    seconds = max(3.0, SECONDS * min(1.0, b.scale))
    events = int(RATE * seconds)
    gw = psutil.Process(b.env.gateway.pid)
    (run_id,) = await b.runs(1)
    shares = [n // PROCESSES + (1 if i < n % PROCESSES else 0) for i in range(PROCESSES)]
    shares = [share for share in shares if share]
    t0 = time.monotonic()
    procs = [await _Clients.start(b, run_id, share) for share in shares]
    await asyncio.gather(*(p.expect(b"first") for p in procs))
    rss_first = gw.memory_info().rss
    for p in procs:
        p.say("more")
    await asyncio.gather(*(p.expect(b"ready") for p in procs))
    connected = time.monotonic() - t0
    await asyncio.sleep(1.0)  # let allocations settle before measuring
    added = n - sum(share // 5 for share in shares)
    per_client = (gw.memory_info().rss - rss_first) / added / 1024

    for p in procs:
        p.say(str(events + 2))  # run.created, the events, the terminal event
    await b._writer("runloom", RATE, seconds, [run_id])
    await b.log.append(run_id, "bench", RunCompleted())
    arrivals = Arrivals()
    wrong = 0
    for p in procs:
        result = await p.result()
        wrong += result["wrong"]
        for stamp, at in result["last"].items():
            arrivals.last[int(stamp)] = max(at, arrivals.last.get(int(stamp), 0))
        for stamp, count in result["seen"].items():
            arrivals.count[int(stamp)] = arrivals.count.get(int(stamp), 0) + count
    assert wrong == 0, f"{wrong} of {n} clients lost or duplicated events"
    assert len(arrivals.count) == events and arrivals.complete(n), "an event missed a client"
    ours = arrivals.latencies()
    print(
        f"(j) {n} clients connected in {connected:.0f} s; append -> last client "
        f"p50 {_pct(ours, 50):.1f} ms, p99 {_pct(ours, 99):.1f} ms over {len(ours)} events; "
        f"{per_client:.1f} KiB a client",
        file=sys.stderr,
        flush=True,
    )

    await b.settle()
    raw = await _raw_latency(b, seconds)
    raw_mem = await b.raw_memory(n)
    label = f"(j) {n} SSE clients, 1 run, {int(RATE)} ev/s"
    last = "append -> last client (raw: 1 consumer)"
    return (
        Figure(f"{label}: {last} p50", "ms", _pct(ours, 50), _pct(raw, 50), False),
        Figure(f"{label}: {last} p99", "ms", _pct(ours, 99), _pct(raw, 99), False),
        Figure(f"{label}: memory per client", "KiB", per_client, raw_mem, False),
    )


class _Clients:
    """A `bench._sse_clients` process holding a share of the clients."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, b: Bench, run_id: str, count: int) -> _Clients:
        from bench._scenarios import ROOT

        first = count // 5
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench._sse_clients",
            str(b.env.port),
            f"/v1/runs/{run_id}/events",
            str(first),
            str(count - first),
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=1 << 26,  # the result is one long line
        )
        clients = cls(proc)
        clients.say(b.env.api_key)  # on stdin: a secret never goes on a command line
        return clients

    def say(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{line}\n".encode())

    async def expect(self, word: bytes) -> None:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 600)
        assert line.strip() == word, line

    async def result(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 300)
        assert await self.proc.wait() == 0
        out: dict[str, Any] = json.loads(line)
        return out


async def _raw_latency(b: Bench, seconds: float) -> list[float]:
    """Append -> one ordered JetStream consumer: when a stored event is first seen at all."""
    arrivals = Arrivals()

    async def cb(msg: Msg) -> None:
        now = time.time_ns()
        arrivals(int(msg.data.split(b'"ts', 1)[1].split(b'"', 1)[0]), now)

    subject = f"raw.j.{time.monotonic_ns()}"
    sub = await b.js.subscribe(subject, cb=cb, ordered_consumer=True, pending_msgs_limit=-1)
    await b._writer("raw", RATE, seconds, [subject])
    await b.until(lambda: len(arrivals.count) >= int(RATE * seconds), 60)
    await sub.unsubscribe()
    return arrivals.latencies()
