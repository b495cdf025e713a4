"""`python -m bench.research_run [--before REF] [--rounds 5]` (`make bench-run`): one research run
end to end, this tree beside an older one, interleaved on the same machine at the same time.

Each tree gets its own `runloom up` (own home and ports; offline provider, the default corpus of
the `dev` tenant). After one warm-up run each (reported apart: it includes the first model
use), the rounds alternate which tree goes first; each run is `POST /v1/runs`, then the stored
events are read until the terminal one. Printed per tree, medians over the rounds:

- run: `run.created` -> `run.completed` (event times; the figure the goal is stated in),
- research+writing: `run.created` -> `content.stored` (the orchestrator's part),
- plan / research / write / deliver: the phases (`plan.proposed`, the last research step, then
  `content.stored`, then the terminal event: deliverables rendered),
- client: the POST to the terminal event seen by the client (polling every 50 ms),

and the 1-minute load average at each run. `--before` is any git ref: its tree is exported
(`git archive`) into .cache/bench-trees/<sha> with its own locked environment (`uv sync`); each
tree's `runloom up` home is kept in .cache/bench-run/ (a rerun reuses its database and corpus).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from runloom.devkit.embedded import free_port, free_ports

ROOT = Path(__file__).resolve().parents[1]
QUESTION = "How do generators and the yield statement work?"
TERMINAL = {"run.completed", "run.failed", "run.cancelled", "run.budget_stopped"}


@dataclass
class Tree:
    label: str
    folder: Path
    home: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    url: str = ""
    key: str = ""
    samples: list[dict[str, float]] = field(default_factory=list)
    warmup: dict[str, float] = field(default_factory=dict)

    def start(self) -> None:
        gateway = free_port()
        management = free_ports(8)
        self.env = {
            **os.environ,
            "RUNLOOM_GATEWAY_PORT": str(gateway),
            "RUNLOOM_NATS_PORT": str(free_port()),
            "RUNLOOM_POSTGRES_PORT": str(free_port()),
            "RUNLOOM_MANAGEMENT_PORT": str(management),
            "RUNLOOM_PROVIDER": "offline",
        }
        for name in ("RUNLOOM_NATS_URL", "RUNLOOM_DATABASE_URL", "VIRTUAL_ENV"):
            self.env.pop(name, None)
        self.url = f"http://127.0.0.1:{gateway}"
        log = (self.home.parent / f"{self.label}-up.log").open("wb")
        self.proc = subprocess.Popen(
            [str(self.folder / ".venv" / "bin" / "runloom"), "up", "--home", str(self.home)],
            cwd=self.folder,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        # Both the gateway and the orchestrator (management port base + 1) must answer.
        for url in (f"{self.url}/readyz", f"http://127.0.0.1:{management + 1}/readyz"):
            _wait_http(url, self.proc, 240.0)
        self.key = (self.home / "api-key").read_text().strip()
        # The default corpus is in place once it lists its documents (older trees load it in
        # `up` before the services start; newer ones in the orchestrator before /readyz).
        with httpx.Client(base_url=self.url, headers=self.headers(), timeout=30) as c:
            deadline = time.monotonic() + 120
            while c.get("/v1/documents", params={"limit": 1}).json().get("total", 0) < 50:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.label}: the default corpus did not load")
                time.sleep(0.5)

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()  # runloom up stops its services and servers on SIGTERM
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    def run_once(self, question: str, deliverables: list[str]) -> dict[str, float]:
        load = os.getloadavg()[0]
        with httpx.Client(base_url=self.url, headers=self.headers(), timeout=60) as c:
            t0 = time.perf_counter()
            r = c.post(
                "/v1/runs",
                json={"question": question, "options": {"deliverables": deliverables}},
                headers={"Idempotency-Key": f"bench-{time.time_ns()}"},
            )
            r.raise_for_status()
            run_id = r.json()["id"]
            events: list[dict[str, Any]] = []
            after: str | None = None
            deadline = time.monotonic() + 300
            while not events or events[-1]["type"] not in TERMINAL:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.label}: run {run_id} did not end")
                params: dict[str, Any] = {"format": "json", "limit": 500}
                if after:
                    params["after"] = after
                page = c.get(f"/v1/runs/{run_id}/events", params=params).json()
                for item in page.get("events", []):
                    after = item["cursor"]
                    events.append(item["event"])
                if not page.get("events"):
                    time.sleep(0.05)
            client = time.perf_counter() - t0
        at = {e["type"]: _epoch(e["time"]) for e in reversed(events)}  # first of each type
        nan = float("nan")
        researched = max(
            (
                _epoch(e["time"])
                for e in events
                if e["type"] == "step.completed"
                and str(e["data"].get("step_id", "")).startswith("research")
            ),
            default=nan,
        )
        return {
            "run": at[events[-1]["type"]] - at["run.created"],
            "orchestrator": at.get("content.stored", nan) - at["run.created"],
            "plan": at.get("plan.proposed", nan) - at["run.created"],
            "research": researched - at.get("plan.proposed", nan),
            "write": at.get("content.stored", nan) - researched,
            "deliver": at[events[-1]["type"]] - at.get("content.stored", nan),
            "events": float(len(events)),
            "sections": float(
                sum(1 for e in events if e["type"] == "step.started" and _is_write(e))
            ),
            "client": client,
            "load": load,
            "completed": float(events[-1]["type"] == "run.completed"),
        }


def _is_write(event: dict[str, Any]) -> bool:
    return str(event["data"].get("step_id", "")).startswith("write")


def _epoch(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"runloom up exited ({proc.returncode}) before {url} answered")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        time.sleep(0.2)
    raise TimeoutError(f"{url} not ready within {timeout:.0f} s")


def export_tree(ref: str) -> Path:
    """The tree of `ref` with its locked environment, cached by commit."""
    sha = subprocess.run(
        ["git", "rev-parse", "--verify", f"{ref}^{{commit}}"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    folder = ROOT / ".cache" / "bench-trees" / sha[:12]
    if not (folder / ".venv" / "bin" / "runloom").exists():
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        archive = subprocess.run(["git", "archive", sha], cwd=ROOT, check=True, capture_output=True)
        subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
        uv = shutil.which("uv") or str(ROOT / ".cache" / "uv" / "bin" / "uv")
        print(f"preparing {ref} ({sha[:12]}) in {folder}: uv sync --frozen", flush=True)
        subprocess.run([uv, "sync", "--frozen", "--quiet"], cwd=folder, check=True)
    return folder


COLUMNS = ("run", "orchestrator", "plan", "research", "write", "deliver", "client", "events")


def summary(tree: Tree) -> str:
    def med(key: str) -> float:
        return statistics.median(s[key] for s in tree.samples)

    done = sum(int(s["completed"]) for s in tree.samples)
    cells = " ".join(f"{med(c):>8.2f}" if c != "events" else f"{med(c):>8.0f}" for c in COLUMNS)
    return (
        f"{tree.label:<10} {cells} {med('load'):>6.1f} {done:>3}/{len(tree.samples):<3}"
        f"   warm-up run {tree.warmup.get('run', float('nan')):.2f} s"
    )


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.research_run")
    parser.add_argument("--before", help="git ref of the tree to compare with (e.g. 8a62e50)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--question", default=QUESTION)
    parser.add_argument(
        "--deliverables", default="report,website,slides", help="comma-separated ('' for none)"
    )
    args = parser.parse_args()
    deliverables = [d for d in args.deliverables.split(",") if d]
    # Homes are kept between invocations (the database with its corpus is reused).
    work = ROOT / ".cache" / "bench-run"
    work.mkdir(parents=True, exist_ok=True)
    trees = [Tree("this tree", ROOT, work / "this-tree")]
    if args.before:
        folder = export_tree(args.before)
        trees.insert(0, Tree(f"{args.before}", folder, work / folder.name))
    try:
        for tree in trees:
            print(f"starting {tree.label} (logs in {work})", flush=True)
            tree.start()
        for tree in trees:
            tree.warmup = tree.run_once(args.question, deliverables)
        for i in range(args.rounds):
            order = trees if i % 2 == 0 else list(reversed(trees))
            for tree in order:
                sample = tree.run_once(args.question, deliverables)
                tree.samples.append(sample)
                print(
                    f"round {i + 1} {tree.label:<10} run {sample['run']:.2f} s (plan"
                    f" {sample['plan']:.2f}, research {sample['research']:.2f}, write"
                    f" {sample['write']:.2f}, deliver {sample['deliver']:.2f}), client"
                    f" {sample['client']:.2f} s, {sample['events']:.0f} events,"
                    f" {sample['sections']:.0f} sections, load {sample['load']:.1f}",
                    flush=True,
                )
        print(f"\n{args.rounds} rounds, interleaved; medians (s); question: {args.question!r}")
        head = " ".join(f"{c[:8]:>8}" for c in COLUMNS)
        print(f"{'tree':<10} {head} {'load':>6} completed")
        for tree in trees:
            print(summary(tree))
        if len(trees) == 2:
            before, after = (statistics.median(s["run"] for s in t.samples) for t in trees)
            print(f"run time, this tree vs {trees[0].label}: {100 * (after / before - 1):+.0f}%")
        return 0
    finally:
        for tree in trees:
            tree.stop()


if __name__ == "__main__":
    sys.exit(main())
