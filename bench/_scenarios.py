"""Figures (a)-(f), each measured for Runloom and for raw nats-py on the same server ((g) and
(h) live in `_streaming.py`, (j) in `_clients.py`).

Raw nats-py baselines: core subscribers on a JetStream subject (fan-out, latency, memory), an
ordered consumer (catch-up) and awaited `js.publish` (appends), on a `BENCH_RAW` stream with
the same storage settings as RUN_EVENTS.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx
import psutil
from nats.aio.msg import Msg
from nats.js import api as js_api
from runloom.contracts.events import RunCompleted, StepProgress
from runloom.runtime import bus
from runloom.runtime.eventlog import EventLog

from bench import _env
from bench._env import Env
from bench._sse import Stream

TENANT = "bench"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class Figure:
    name: str
    unit: str
    runloom: float
    raw: float
    higher_is_better: bool = True

    @property
    def ratio(self) -> float:
        return self.runloom / self.raw if self.raw else float("nan")


class Bench:
    def __init__(self, env: Env, scale: float = 1.0) -> None:
        self.env = env
        self.scale = scale

    def n(self, value: int) -> int:
        return max(1, int(value * self.scale))

    async def __aenter__(self) -> Bench:
        self.nc = await bus.connect(self.env.nats_url, "bench", **_env.client())
        self.js = self.nc.jetstream()
        await self.js.add_stream(
            js_api.StreamConfig(
                name="BENCH_RAW",
                subjects=["raw.>"],
                storage=js_api.StorageType.FILE,
                duplicate_window=120,
            )
        )
        self.log = EventLog(self.js, "bench")
        self.http = httpx.AsyncClient(
            base_url=self.env.url,
            headers={"Authorization": f"Bearer {self.env.api_key}"},
            timeout=30,
            limits=httpx.Limits(max_connections=20),
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()
        await self.nc.close()

    # -- helpers --------------------------------------------------------------------------

    async def runs(self, n: int) -> list[str]:
        sem = asyncio.Semaphore(10)

        async def one(i: int) -> str:
            async with sem:
                r = await self.http.post("/v1/runs", json={"question": f"bench {i}"})
                r.raise_for_status()
                return str(r.json()["id"])

        return list(await asyncio.gather(*(one(i) for i in range(n))))

    async def connect(
        self, run_ids: list[str], per_run: int, latencies: list[float] | None = None
    ) -> list[Stream]:
        streams: list[Stream] = []
        for run_id in run_ids:
            for _ in range(per_run):
                s = Stream(latencies)
                await s.open(self.env.port, f"/v1/runs/{run_id}/events", self.env.api_key)
                streams.append(s)
        await asyncio.wait_for(asyncio.gather(*(s.first.wait() for s in streams)), 120)
        return streams

    async def append(self, run_id: str, n: int, *, end: bool = True) -> None:
        for i in range(n):
            await self.log.append(run_id, TENANT, StepProgress(step_id="s", message=f"e{i}"))
        if end:
            await self.log.append(run_id, TENANT, RunCompleted())

    async def raw_subscribers(self, subjects: list[str], per_subject: int) -> list[list[int]]:
        counters: list[list[int]] = []
        for subject in subjects:
            for _ in range(per_subject):
                box = [0]

                async def cb(msg: object, box: list[int] = box) -> None:
                    box[0] += 1

                await self.nc.subscribe(subject, cb=cb, pending_msgs_limit=1_000_000)
                counters.append(box)
        await self.nc.flush()
        return counters

    async def raw_publish(self, subject: str, n: int) -> None:
        for i in range(n):
            await self.js.publish(subject, b'{"data":{"message":"e%d"}}' % i)

    async def settle(self, timeout: float = 120) -> None:
        """Until the gateway's archive has stored every event so far, so that a measurement
        is not charged with archiving what the previous one appended (its own events are
        archived while it runs, as in service)."""

        async def caught_up() -> bool:
            streaming = (await self.http.get("/metrics/streaming")).json()
            return bool(streaming.get("archive_lag_events") == 0)

        await self.until(caught_up, timeout)

    @staticmethod
    async def until(check: Callable[[], bool | Awaitable[bool]], timeout: float = 120) -> None:
        """Until `check` (plain or async) says so, asking every 5 ms."""
        deadline = time.monotonic() + timeout
        while not await _truth(check()):
            if time.monotonic() > deadline:
                raise TimeoutError("benchmark condition not reached")
            await asyncio.sleep(0.005)

    # -- figures (a)-(f) -------------------------------------------------------------------

    async def fanout(self) -> Figure:
        clients, events = self.n(500), self.n(300)
        (run_id,) = await self.runs(1)
        streams = await self.connect([run_id], clients)
        t0 = time.perf_counter()
        await self.append(run_id, events)
        await asyncio.wait_for(asyncio.gather(*(s.done.wait() for s in streams)), 300)
        ours = clients * (events + 1) / (time.perf_counter() - t0)
        assert all(s.count == events + 2 for s in streams), "lost or duplicated events"
        for s in streams:
            s.close()
        await self.settle()
        counters = await self.raw_subscribers(["raw.fanout"], clients)
        t0 = time.perf_counter()
        await self.raw_publish("raw.fanout", events + 1)
        await self.until(lambda: all(c[0] >= events + 1 for c in counters))
        raw = clients * (events + 1) / (time.perf_counter() - t0)
        return Figure(f"(a) fan-out, 1 run x {clients} SSE clients", "deliveries/s", ours, raw)

    async def many_runs(self) -> Figure:
        runs, per_run, events = self.n(200), 5, 10
        run_ids = await self.runs(runs)
        streams = await self.connect(run_ids, per_run)
        t0 = time.perf_counter()
        await asyncio.gather(*(self.append(r, events) for r in run_ids))
        await asyncio.wait_for(asyncio.gather(*(s.done.wait() for s in streams)), 300)
        ours = len(streams) * (events + 1) / (time.perf_counter() - t0)
        for s in streams:
            s.close()
        subjects = [f"raw.many.{i}" for i in range(runs)]
        await self.settle()
        counters = await self.raw_subscribers(subjects, per_run)
        t0 = time.perf_counter()
        await asyncio.gather(*(self.raw_publish(s, events + 1) for s in subjects))
        await self.until(lambda: all(c[0] >= events + 1 for c in counters))
        raw = len(counters) * (events + 1) / (time.perf_counter() - t0)
        return Figure(f"(b) {runs} runs x {per_run} clients", "deliveries/s", ours, raw)

    async def catch_up(self) -> Figure:
        backlog = self.n(10_000)
        (run_id,) = await self.runs(1)
        await asyncio.gather(
            self.append(run_id, backlog), self.raw_publish("raw.backlog", backlog + 2)
        )
        s = Stream()
        t0 = time.perf_counter()
        await s.open(self.env.port, f"/v1/runs/{run_id}/events", self.env.api_key)
        await asyncio.wait_for(s.done.wait(), 300)
        ours = s.count / (time.perf_counter() - t0)
        assert s.count == backlog + 2, s.count
        s.close()
        await self.settle()
        t0 = time.perf_counter()
        sub = await self.js.subscribe("raw.backlog", ordered_consumer=True)
        got = 0
        while got < backlog + 2:
            await sub.next_msg(timeout=10)
            got += 1
        raw = got / (time.perf_counter() - t0)
        await sub.unsubscribe()
        return Figure(f"(c) catch-up behind {backlog} events", "events/s", ours, raw)

    async def latency(self) -> tuple[Figure, ...]:
        rate, seconds, runs, per_run = 2000.0, 3.0, 4, 25
        run_ids = await self.runs(runs)
        ours: list[float] = []
        streams = await self.connect(run_ids, per_run, ours)
        await self._writer("runloom", rate, seconds, run_ids)
        for r in run_ids:
            await self.log.append(r, TENANT, RunCompleted())
        await asyncio.wait_for(asyncio.gather(*(s.done.wait() for s in streams)), 120)
        for s in streams:
            s.close()
        # Raw baselines, read the same way (a callback per message, stamp parsed from the
        # bytes): JetStream ordered consumers, which, like the gateway, see an event only once
        # the server has stored it; and core subscribers, which see it before it is stored.
        await self.settle()
        stored = await self._raw_latency("stored", rate, seconds, runs, per_run)
        core = await self._raw_latency("core", rate, seconds, runs, per_run)
        label = f"(d) latency at {int(rate)} ev/s, {runs * per_run} clients"
        return (
            Figure(label + " p50", "ms", _pct(ours, 50), _pct(stored, 50), False),
            Figure(label + " p99", "ms", _pct(ours, 99), _pct(stored, 99), False),
            Figure(label + " p50, raw core sub", "ms", _pct(ours, 50), _pct(core, 50), False),
            Figure(label + " p99, raw core sub", "ms", _pct(ours, 99), _pct(core, 99), False),
        )

    async def _raw_latency(
        self, kind: str, rate: float, seconds: float, runs: int, per_run: int
    ) -> list[float]:
        raw: list[float] = []

        async def cb(msg: Msg) -> None:
            now = time.time_ns()
            stamp = msg.data.split(b'"ts', 1)[1].split(b'"', 1)[0]
            raw.append((now - int(stamp)) / 1e6)

        subjects = [f"raw.lat.{kind}.{i}" for i in range(runs)]
        subs = []
        for subject in subjects:
            for _ in range(per_run):
                if kind == "core":
                    sub = await self.nc.subscribe(subject, cb=cb, pending_msgs_limit=1_000_000)
                else:
                    sub = await self.js.subscribe(
                        subject,
                        cb=cb,
                        ordered_consumer=True,
                        deliver_policy=js_api.DeliverPolicy.NEW,
                        pending_msgs_limit=1_000_000,
                    )
                subs.append(sub)
        await self.nc.flush()
        await self._writer("raw", rate, seconds, subjects)
        await self.until(lambda: len(raw) >= int(rate * seconds) * per_run * 0.99, 30)
        for sub in subs:
            await sub.unsubscribe()
        return raw

    async def _writer(self, mode: str, rate: float, seconds: float, targets: list[str]) -> None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench._writer",
            self.env.nats_url,
            mode,
            str(rate),
            str(seconds),
            TENANT,
            *targets,
            cwd=ROOT,
        )
        assert await proc.wait() == 0

    async def memory(self) -> Figure:
        clients, runs = self.n(2000), 20
        run_ids = await self.runs(runs)
        gw = psutil.Process(self.env.gateway.pid)
        before = gw.memory_info().rss
        streams = await self.connect(run_ids, clients // runs)
        await asyncio.sleep(1.0)  # let allocations settle before measuring
        ours = (gw.memory_info().rss - before) / len(streams) / 1024
        for s in streams:
            s.close()
        raw = await self.raw_memory(len(streams))
        return Figure(f"(e) memory per idle client ({len(streams)})", "KiB", ours, raw, False)

    async def raw_memory(self, count: int) -> float:
        """RSS growth per idle core subscription, `count` of them in a fresh process (KiB)."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench._rawmem",
            self.env.nats_url,
            str(count),
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await proc.communicate()
        return float(out.decode().strip())

    async def appends(self) -> tuple[Figure, ...]:
        n = self.n(2000)
        (run_id, awaited_id) = await self.runs(2)
        t0 = time.perf_counter()
        # All n waiting at once, stored in call order: the log commits them in groups.
        await asyncio.gather(
            *(
                self.log.append(run_id, TENANT, StepProgress(step_id="s", message=f"e{i}"))
                for i in range(n)
            )
        )
        one = n / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        await self.append(awaited_id, n, end=False)
        one_awaited = n / (time.perf_counter() - t0)
        await self.settle()
        t0 = time.perf_counter()
        await self.raw_publish("raw.append.one", n)
        raw_one = n / (time.perf_counter() - t0)

        runs, each = 100, self.n(20)
        run_ids = await self.runs(runs)
        t0 = time.perf_counter()
        await asyncio.gather(*(self.append(r, each, end=False) for r in run_ids))
        many = runs * each / (time.perf_counter() - t0)
        await self.settle()
        t0 = time.perf_counter()
        await asyncio.gather(*(self.raw_publish(f"raw.append.{i}", each) for i in range(runs)))
        raw_many = runs * each / (time.perf_counter() - t0)
        return (
            Figure("(f) ordered appends, 1 run", "appends/s", one, raw_one),
            Figure("(f) ordered appends, 1 run, each awaited", "appends/s", one_awaited, raw_one),
            Figure(f"(f) ordered appends, {runs} runs", "appends/s", many, raw_many),
        )


async def _truth(value: bool | Awaitable[bool]) -> bool:
    return await value if inspect.isawaitable(value) else bool(value)


def _pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p / 100))]


FIGURES = "abcdefghj"
"""The figures' letters, in the order they are measured."""


async def run_all(env: Env, scale: float, figures: str = FIGURES) -> list[Figure]:
    from bench import _clients, _streaming

    out: list[Figure] = []
    async with Bench(env, scale) as b:
        # (e) first: it is the gateway's RSS growth, which earlier figures would hide (the
        # heap they grew and freed is reused), so it is measured on a fresh gateway.
        steps: dict[str, Callable[[], Awaitable[Figure | tuple[Figure, ...]]]] = {
            "e": b.memory,
            "a": b.fanout,
            "b": b.many_runs,
            "c": b.catch_up,
            "d": b.latency,
            "f": b.appends,
            "g": lambda: _streaming.one_run(b),
            "h": lambda: _streaming.many_runs(b),
            "j": lambda: _clients.many_clients(b),
        }
        for letter, step in steps.items():
            if letter not in figures:
                continue
            await b.settle()  # each figure on a gateway that is done with the one before
            result = await step()
            out.extend(result if isinstance(result, tuple) else (result,))
    return sorted(out, key=lambda f: f.name)


def median_figures(rounds: list[list[Figure]]) -> list[Figure]:
    merged = []
    for figs in zip(*rounds, strict=True):
        merged.append(
            Figure(
                figs[0].name,
                figs[0].unit,
                statistics.median(f.runloom for f in figs),
                statistics.median(f.raw for f in figs),
                figs[0].higher_is_better,
            )
        )
    return merged
