"""`make soak`: the fault suite's cluster under a steady load for minutes to hours, with a seeded
random schedule of its faults, then the checker, and every process's resources over time.

    python -m runloom.devkit.soak --minutes 30 [--seed N] [--out DIR]

- Platform: `chaos.ClusterPlatform` (3 nats-server nodes in network namespaces behind fault
  proxies, PostgreSQL, two replicas of every service).
- Load: `in_flight` runs always in flight, each followed by two SSE clients that drop and resume
  (alternating gateways, `Last-Event-ID`), plus synthetic writers recording every acknowledged
  append, in windows of `window_s` (their runs end, new ones begin).
- Faults: `chaos.FAULTS`, drawn from `random.Random(seed)` at random gaps; the schedule is
  printed first (replay it with the same `--seed` and `--minutes`).
- Then `chaos.judge`: lost, duplicated, reordered, holes, exactly one terminal event,
  ledger = usage, over every run of the soak.
- Resources: every `sample_s`, each process's RSS, open fds and threads (psutil; PostgreSQL with
  its backends) and, for the services, their asyncio tasks (`runloom_asyncio_tasks` on the
  management port). After the warm-up, `growth()` compares the median of the first third of a
  process's samples with the median of the last third (its latest pid only: a process a fault
  restarted starts again) and fits a Theil-Sen slope; the table, a JSON file and a PNG plot go
  to `--out`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import psutil
from runloom.devkit.chaos import (
    FAULTS,
    ClientLog,
    ClusterPlatform,
    Judged,
    follow,
    heal,
    judge,
    post_run,
    synthetic_writer,
)
from runloom.devkit.checker import Seen

RESOURCES = ("rss_mib", "fds", "tasks", "threads")


@dataclass(frozen=True)
class SoakPlan:
    """What a soak does; with the same values, the same fault schedule."""

    minutes: float = 30.0
    seed: int = 0
    in_flight: int = 4
    """Runs always in flight (each with two SSE clients)."""
    warmup_fraction: float = 0.25
    """Of the soak, the first part whose samples the growth leaves out (caches filling, JIT-like
    warm-up of pools and connections)."""
    sample_s: float = 5.0
    window_s: float = 60.0
    """Synthetic writers' runs last this long (then end with run.completed, new ones begin)."""
    fault_gap_s: tuple[float, float] = (60.0, 180.0)
    """A fault every so many seconds (uniform in the range), from the first gap on."""
    faults: tuple[str, ...] = tuple(name for name, _fault, _quick in FAULTS)
    rss_limit_pct: float = 5.0
    """RSS growth after warm-up allowed per service process."""
    server_rss_limit_pct: float = 5.0
    """The same for nats-server and PostgreSQL, whose caches follow the data the soak stores
    (a short soak is still filling them: its limit is looser)."""
    count_limit_pct: float = 20.0
    count_slack: float = 8.0
    """fds, tasks, threads: flat when the last third's median <= first third's x (1 + pct) +
    slack (a steady load keeps a fluctuating number of them open)."""

    @property
    def seconds(self) -> float:
        return self.minutes * 60.0

    def schedule(self) -> list[tuple[float, str]]:
        """(seconds after the load starts, fault name), seeded; none in the last two minutes
        (or last fifth of a short soak), so the checker judges a healed cluster."""
        rng = random.Random(self.seed)
        end = self.seconds - min(120.0, self.seconds / 5)
        at, out = 0.0, []
        while True:
            at += rng.uniform(*self.fault_gap_s)
            if at >= end:
                return out
            out.append((round(at, 1), rng.choice(self.faults)))


@dataclass
class Sample:
    t: float
    name: str
    server: bool
    """nats-server or PostgreSQL (not one of ours)."""
    pid: int
    rss_mib: float
    fds: int
    threads: int
    tasks: int | None


@dataclass
class Growth:
    """One process and resource after the warm-up."""

    name: str
    resource: str
    first: float
    last: float
    per_hour: float
    """Theil-Sen slope, per hour."""
    samples: int
    covered: float
    """Fraction of the post-warm-up time its latest pid covers (< 1: a fault restarted it)."""
    ok: bool

    @property
    def pct(self) -> float:
        return 100.0 * (self.last - self.first) / self.first if self.first else 0.0


@dataclass
class SoakResult:
    plan: SoakPlan
    judged: Judged
    runs: int
    acked: int
    faults: list[tuple[float, str, str]]
    """(at, name, outcome: "ok" or the error)."""
    growth: list[Growth]
    samples: list[Sample] = field(default_factory=list)
    server_errors: int = 0
    resets: int = 0

    @property
    def grows(self) -> list[Growth]:
        return [g for g in self.growth if not g.ok]


def theil_sen(points: list[tuple[float, float]]) -> float:
    """Median of the pairwise slopes (robust to the spikes a fault or a GC makes); at most a few
    hundred points are paired (evenly thinned)."""
    if len(points) < 2:
        return 0.0
    step = max(1, len(points) // 200)
    pts = points[::step]
    slopes = [
        (y2 - y1) / (x2 - x1)
        for i, (x1, y1) in enumerate(pts)
        for x2, y2 in pts[i + 1 :]
        if x2 > x1
    ]
    return statistics.median(slopes) if slopes else 0.0


def growth(samples: list[Sample], plan: SoakPlan, start: float, end: float) -> list[Growth]:
    """Per process and resource: first third vs last third of its post-warm-up samples.

    Only a process's latest pid counts, and one that a fault restarted gets a warm-up of its
    own (as long as the soak's, from its first sample): a fresh nats-server reloading its
    streams is warming up, not leaking. A process with fewer than 6 samples left is not judged.
    """
    warm_s = (end - start) * plan.warmup_fraction
    out: list[Growth] = []
    for name in sorted({s.name for s in samples}):
        pid = next(s.pid for s in reversed(samples) if s.name == name)
        series = [s for s in samples if s.name == name and s.pid == pid]
        warm = max(start, series[0].t) + warm_s
        series = [s for s in series if s.t >= warm]
        if not series:
            continue
        covered = (series[-1].t - series[0].t) / max(1e-9, end - start - warm_s)
        for resource in RESOURCES:
            points = [(s.t, float(v)) for s in series if (v := getattr(s, resource)) is not None]
            if len(points) < 6:
                continue
            third = len(points) // 3
            first = statistics.median(v for _t, v in points[:third])
            last = statistics.median(v for _t, v in points[-third:])
            if resource == "rss_mib":
                limit = plan.server_rss_limit_pct if series[-1].server else plan.rss_limit_pct
                ok = last <= first * (1 + limit / 100)
            else:
                ok = last <= first * (1 + plan.count_limit_pct / 100) + plan.count_slack
            slope = theil_sen(points) * 3600
            out.append(Growth(name, resource, first, last, slope, len(points), covered, ok))
    return out


class Sampler:
    """Every process of the platform, sampled: psutil for RSS, fds and threads; the management
    port's `runloom_asyncio_tasks` for the services."""

    def __init__(self, plat: ClusterPlatform) -> None:
        self.plat = plat
        self.samples: list[Sample] = []
        self.t0 = time.monotonic()

    def processes(self) -> list[tuple[str, int, str | None]]:
        """(name, pid, metrics URL or None for a server)."""
        out: list[tuple[str, int, str | None]] = []
        for name, proc in self.plat.procs.items():
            if proc.running and proc.pid is not None:
                port = proc.env.get("RUNLOOM_MANAGEMENT_PORT")
                out.append((name, proc.pid, f"http://127.0.0.1:{port}/metrics" if port else None))
        for node in self.plat.cluster.nodes if self.plat.cluster is not None else []:
            if node.running and node.proc is not None:
                out.append((node.name, node.proc.pid, None))
        pg = self.plat.postgres
        if pg.running and pg.proc is not None:
            out.append(("postgres", pg.proc.pid, None))
        return out

    async def sample(self, client: httpx.AsyncClient) -> None:
        t = time.monotonic() - self.t0
        for name, pid, metrics in self.processes():
            try:
                rss, fds, threads = _usage(psutil.Process(pid), with_children=name == "postgres")
            except psutil.Error:
                continue
            tasks = await _tasks(client, metrics) if metrics else None
            server = metrics is None
            self.samples.append(Sample(t, name, server, pid, rss / 2**20, fds, threads, tasks))

    async def run(self, every: float, stop: asyncio.Event) -> None:
        async with httpx.AsyncClient(timeout=2.0) as client:
            while not stop.is_set():
                await self.sample(client)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), every)


def _usage(p: psutil.Process, *, with_children: bool) -> tuple[int, int, int]:
    """RSS, open fds and threads of `p`; with its children (PostgreSQL's backends), their
    proportional set size instead of RSS, so shared buffers are counted once, not per backend."""
    if not with_children:
        with p.oneshot():
            return p.memory_info().rss, p.num_fds(), p.num_threads()
    mem = fds = threads = 0
    for proc in [p, *p.children()]:
        with contextlib.suppress(psutil.NoSuchProcess), proc.oneshot():
            mem += proc.memory_full_info().pss
            fds += proc.num_fds()
            threads += proc.num_threads()
    return mem, fds, threads


async def _tasks(client: httpx.AsyncClient, url: str) -> int | None:
    try:
        text = (await client.get(url)).text
    except httpx.HTTPError:
        return None
    for line in text.splitlines():
        if line.startswith("runloom_asyncio_tasks "):
            return int(float(line.split()[1]))
    return None


class Load:
    """`in_flight` runs at a time, each followed by two SSE clients; synthetic writers in
    windows. Everything it started is recorded for the checker."""

    def __init__(self, plat: ClusterPlatform, plan: SoakPlan) -> None:
        self.plat = plat
        self.plan = plan
        self.rng = random.Random(plan.seed + 1)
        self.run_ids: list[str] = []
        self.clients: dict[tuple[str, str], ClientLog] = {}
        self.acked: dict[str, list[Seen]] = {}
        self.appends: list[float] = []
        self.posted = 0

    async def runner(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            self.posted += 1
            run_id = await post_run(self.plat, self.posted)
            self.run_ids.append(run_id)
            follow_until = time.monotonic() + 300
            logs = [ClientLog(), ClientLog()]
            for c, log in zip("ab", logs, strict=True):
                self.clients[(run_id, c)] = log
            await asyncio.gather(
                *(
                    follow(self.plat, run_id, log, random.Random(self.rng.random()), follow_until)
                    for log in logs
                )
            )

    async def writers(self, deadline: float) -> None:
        from runloom.contracts.ids import new_id

        while time.monotonic() < deadline:
            ids = [new_id("run") for _ in range(2)]
            for r in ids:
                self.acked[r] = []
            stop = asyncio.Event()
            task = asyncio.ensure_future(
                synthetic_writer(self.plat, ids, self.acked, stop, self.appends)
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.shield(task), min(self.plan.window_s, deadline - time.monotonic())
                )
            stop.set()
            await task


async def soak(plat: ClusterPlatform, plan: SoakPlan, out: Path | None = None) -> SoakResult:
    """Load, faults on schedule, then the checker; samples throughout."""
    schedule = plan.schedule()
    print(
        f"[soak] seed {plan.seed}, {plan.minutes:g} min, {plan.in_flight} runs in flight; "
        f"faults (s after start): {schedule or 'none'}",
        flush=True,
    )
    by_name = {name: fault for name, fault, _quick in FAULTS}
    sampler = Sampler(plat)
    stop_sampling = asyncio.Event()
    sampling = asyncio.ensure_future(sampler.run(plan.sample_s, stop_sampling))
    load = Load(plat, plan)
    began = time.monotonic()
    deadline = began + plan.seconds
    runners = [asyncio.ensure_future(load.runner(deadline)) for _ in range(plan.in_flight)]
    writers = asyncio.ensure_future(load.writers(deadline))
    done: list[tuple[float, str, str]] = []
    for at, name in schedule:
        await asyncio.sleep(max(0.0, began + at - time.monotonic()))
        print(f"[soak] {time.monotonic() - began:7.1f}s fault: {name}", flush=True)
        try:
            await by_name[name](plat)
            await heal(plat)
            done.append((at, name, "ok"))
        except Exception as exc:  # a fault that could not be applied is reported, not fatal
            done.append((at, name, f"{type(exc).__name__}: {exc}"[:200]))
            with contextlib.suppress(Exception):
                await heal(plat)
    await asyncio.gather(*runners, writers)
    end = time.monotonic() - sampler.t0
    stop_sampling.set()
    await sampling
    print(f"[soak] load over: {len(load.run_ids)} runs; checking", flush=True)
    judged = await judge(plat, load.run_ids, load.clients, load.acked)
    start = began - sampler.t0
    logs = list(load.clients.values())
    result = SoakResult(
        plan=plan,
        judged=judged,
        runs=len(load.run_ids),
        acked=sum(len(a) for a in load.acked.values()),
        faults=done,
        growth=growth(sampler.samples, plan, start, end),
        samples=sampler.samples,
        server_errors=sum(
            n for c in logs for code, n in c.refusals.items() if code >= 500 and code != 503
        ),
        resets=sum(c.resets for c in logs),
    )
    if out is not None:
        write(result, out, start=start, warm_at=start + (end - start) * plan.warmup_fraction)
    return result


def report(result: SoakResult) -> str:
    v = result.judged.verdict
    lines = [
        f"runs {result.runs} (completed {result.judged.completed}, endings "
        f"{result.judged.endings}), acknowledged appends {result.acked}",
        f"checker: lost {v.lost}, duplicates {v.duplicates}, reorders {v.reorders}, holes "
        f"{v.holes}, archive missing {v.archive_missing}, terminal!=1 {v.bad_terminal}, "
        f"ledger!=usage {v.ledger_mismatch}; 5xx {result.server_errors}, resets "
        f"{result.resets}",
        "faults: " + ("; ".join(f"{at:g}s {n} ({o})" for at, n, o in result.faults) or "none"),
        "",
        "| process | resource | after warm-up | at the end | growth | slope /h | covered | ok |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for g in result.growth:
        lines.append(
            f"| {g.name} | {g.resource} | {g.first:.1f} | {g.last:.1f} | {g.pct:+.1f} % | "
            f"{g.per_hour:+.1f} | {g.covered:.0%} | {'yes' if g.ok else 'NO'} |"
        )
    return "\n".join(lines)


def write(result: SoakResult, out: Path, *, start: float, warm_at: float) -> None:
    """`soak.json` (samples, growth, verdict), `soak.md` (the table) and `soak.png` (the plot)."""
    out.mkdir(parents=True, exist_ok=True)
    data = {
        "plan": asdict(result.plan),
        "verdict": asdict(result.judged.verdict),
        "runs": result.runs,
        "acked": result.acked,
        "faults": result.faults,
        "growth": [asdict(g) | {"pct": g.pct} for g in result.growth],
        "samples": [asdict(s) for s in result.samples],
    }
    (out / "soak.json").write_text(json.dumps(data))
    (out / "soak.md").write_text(report(result) + "\n")
    plot(result.samples, out / "soak.png", warm_at=warm_at, start=start, faults=result.faults)


def plot(
    samples: list[Sample],
    path: Path,
    *,
    start: float,
    warm_at: float,
    faults: list[tuple[float, str, str]],
) -> None:
    """One panel per resource, one line per process; times in minutes since the load began."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(RESOURCES), 1, figsize=(12, 3.2 * len(RESOURCES)), sharex=True)
    names = sorted({s.name for s in samples})
    t0 = start
    cmap = plt.get_cmap("tab20")
    colors = [cmap(i % 20) for i in range(len(names))]
    for ax, resource in zip(axes, RESOURCES, strict=True):
        ax.set_prop_cycle(color=colors)
        for name in names:
            pts = [
                ((s.t - t0) / 60, v)
                for s in samples
                if s.name == name and (v := getattr(s, resource)) is not None
            ]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], label=name, linewidth=1)
        ax.axvline((warm_at - t0) / 60, color="grey", linestyle="--", linewidth=0.8)
        for at, _name, _outcome in faults:
            ax.axvline(at / 60, color="red", alpha=0.3, linewidth=0.8)
        ax.set_ylabel(resource)
        ax.grid(alpha=0.3)
    axes[0].legend(loc="upper left", fontsize=7, ncol=4)
    axes[-1].set_xlabel("minutes (dashed: end of warm-up; red: faults)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=None, help="fault schedule (default: random)")
    parser.add_argument("--out", default="test-artifacts/soak")
    parser.add_argument("--in-flight", type=int, default=4)
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10**6)
    plan = SoakPlan(minutes=args.minutes, seed=seed, in_flight=args.in_flight)
    return asyncio.run(_main(plan, Path(args.out)))


async def _main(plan: SoakPlan, out: Path) -> int:
    import shutil
    import tempfile

    from runloom.devkit import netns

    why = netns.available()
    if why is not None:
        print(f"[soak] cannot run: {why}", flush=True)
        return 2
    root = Path(tempfile.mkdtemp(prefix="runloom-soak-"))
    plat = ClusterPlatform(root)
    try:
        await plat.start()
        result = await soak(plat, plan, out)
    finally:
        await plat.close()
        shutil.rmtree(root, ignore_errors=True)
    print(report(result), flush=True)
    print(f"[soak] replay: make soak SOAK_MINUTES={plan.minutes:g} SOAK_SEED={plan.seed}")
    print(f"[soak] plot: {out / 'soak.png'}, data: {out / 'soak.json'}")
    ok = result.judged.verdict.ok and not result.grows and not result.server_errors
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
