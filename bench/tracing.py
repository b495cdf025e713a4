"""`python -m bench.tracing [--rounds N]`: what tracing costs, export on vs off.

Each round measures the three modes on a fresh platform each (nats-server, PostgreSQL, a gateway
process), alternating which goes first:

- off: no OTLP endpoint: the services' default (ids made and carried, nothing recorded);
- on: every process exports over OTLP/HTTP to a local receiver (a sink in this process that
  answers like a collector), the gateway's FastAPI and asyncpg instrumentation included, with
  the default sampler (one run in ten kept, decided at the run's root);
- on, all: the same keeping every trace (`OTEL_TRACES_SAMPLER=parentbased_always_on`).

Figures: ordered appends/s (1 run; 100 runs concurrently) from a writer process traced like a
service (one PRODUCER span per append), and SSE latency p50/p99 from a paced writer's append
to an SSE client of the gateway (2,000 events/s, 100 clients). Goal: on costs <= 10%.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from runloom.contracts.events import RunCompleted

from bench._env import Env, platform
from bench._scenarios import ROOT, TENANT, Bench, _pct

RATE, SECONDS, RUNS, PER_RUN = 2000.0, 3.0, 4, 25


class Sink:
    """An OTLP/HTTP endpoint that takes every export and answers 200 (bytes counted)."""

    def __init__(self) -> None:
        self.bytes = 0
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                sink.bytes += len(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


MODES = ("off", "on", "all")
"""Export off; on with the default sampling; on keeping every trace."""


def _env(mode: str, sink: Sink) -> dict[str, str]:
    if mode == "off":
        return {"RUNLOOM_OTEL_EXPORTER": "none"}
    return {
        "RUNLOOM_OTEL_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": sink.url,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        **({"OTEL_TRACES_SAMPLER": "parentbased_always_on"} if mode == "all" else {}),
    }


async def _child(env: dict[str, str], *args: str) -> bytes:
    import os

    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench._traced",
        *args,
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0, out
    return out


async def measure(mode: str, sink: Sink) -> dict[str, float]:
    env = _env(mode, sink)
    async with platform("always", extra_env=env) as penv, Bench(penv) as b:
        appends = await _appends(b, penv, env)
        p50, p99 = await _latency(b, penv, env)
    return {"appends_one": appends["one"], "appends_many": appends["many"], "p50": p50, "p99": p99}


async def _appends(b: Bench, penv: Env, env: dict[str, str]) -> dict[str, float]:
    run_ids = await b.runs(101)
    out = await _child(env, "appends", penv.nats_url, TENANT, "2000", "20", *run_ids)
    result = json.loads(out.decode().strip().splitlines()[-1])
    assert result["exporting"] == (env["RUNLOOM_OTEL_EXPORTER"] == "otlp"), result
    return {"one": float(result["one"]), "many": float(result["many"])}


async def _latency(b: Bench, penv: Env, env: dict[str, str]) -> tuple[float, float]:
    run_ids = await b.runs(RUNS)
    ours: list[float] = []
    streams = await b.connect(run_ids, PER_RUN, ours)
    await _child(env, "writer", penv.nats_url, "runloom", str(RATE), str(SECONDS), TENANT, *run_ids)
    for r in run_ids:
        await b.log.append(r, TENANT, RunCompleted())
    await asyncio.wait_for(asyncio.gather(*(s.done.wait() for s in streams)), 120)
    for s in streams:
        s.close()
    return _pct(ours, 50), _pct(ours, 99)


ROWS = (
    ("appends_one", "ordered appends, 1 run", "appends/s", True),
    ("appends_many", "ordered appends, 100 runs", "appends/s", True),
    ("p50", f"SSE latency p50 ({int(RATE)} ev/s, {RUNS * PER_RUN} clients)", "ms", False),
    ("p99", f"SSE latency p99 ({int(RATE)} ev/s, {RUNS * PER_RUN} clients)", "ms", False),
)


def table(results: dict[str, dict[str, float]], title: str) -> str:
    off = results["off"]
    lines = [
        title,
        f"{'figure':<46} {'export off':>11} {'on':>11} {'cost':>7} {'on, all':>11} {'cost':>7}"
        "  unit",
        "-" * 104,
    ]
    for key, label, unit, higher in ROWS:
        line = f"{label:<46} {off[key]:>11.1f}"
        for mode in MODES[1:]:
            a, b = off[key], results[mode][key]
            cost = (a - b) / a if higher else (b - a) / a
            line += f" {b:>11.1f} {cost:>+7.1%}"
        lines.append(f"{line}  {unit}")
    return "\n".join(lines)


async def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tracing", description=__doc__)
    parser.add_argument("--rounds", type=int, default=3, help="rounds; medians are reported")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    sink = Sink()
    results: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    try:
        for i in range(args.rounds):
            order = MODES[i % len(MODES) :] + MODES[: i % len(MODES)]  # each goes first in turn
            for mode in order:
                results[mode].append(await measure(mode, sink))
            last = {mode: rs[-1] for mode, rs in results.items()}
            print(table(last, f"\ntracing, round {i + 1} (order {', '.join(order)})"), flush=True)
    finally:
        sink.close()
    if args.rounds > 1:
        med = {
            mode: {k: statistics.median(r[k] for r in rs) for k in rs[0]}
            for mode, rs in results.items()
        }
        print(table(med, f"\ntracing, medians of {args.rounds} rounds"))
    print(f"(the sink took {sink.bytes / 1e6:.1f} MB of OTLP protobuf)")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
