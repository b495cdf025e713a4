"""`python -m bench [--rounds N] [--scale F] [--figures abcdefghj]`: figures vs raw nats-py.

Each round starts a private nats-server, PostgreSQL and gateway process, measures every
figure, and stops them; with several rounds the medians are printed too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys

from runloom.runtime.process import raise_open_files

from bench import _clients
from bench._env import platform
from bench._scenarios import FIGURES, Figure, median_figures, run_all


def table(figures: list[Figure], title: str) -> str:
    lines = [
        title,
        f"{'figure':<56} {'runloom':>12} {'raw nats-py':>12} {'ratio':>7}  unit",
        "-" * 104,
    ]
    for f in figures:
        lines.append(
            f"{f.name:<56} {f.runloom:>12.1f} {f.raw:>12.1f} {f.ratio:>7.2f}  {f.unit}"
            + ("" if f.higher_is_better else " (lower is better)")
        )
    return "\n".join(lines)


async def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--rounds", type=int, default=3, help="rounds; medians are reported")
    parser.add_argument("--scale", type=float, default=1.0, help="scale client/event counts")
    parser.add_argument("--json", action="store_true", help="also print JSON lines")
    parser.add_argument(
        "--sync-interval",
        default="always",
        help="nats-server JetStream sync_interval (always = fsync every write; e.g. 2m)",
    )
    parser.add_argument(
        "--figures",
        default=FIGURES,
        help="which figures to measure, by letter (e.g. de for latency and memory only)",
    )
    args = parser.parse_args()
    if not args.figures or set(args.figures) - set(FIGURES):
        parser.error(f"--figures takes letters among {FIGURES}")
    logging.basicConfig(level=logging.WARNING)
    if "j" in args.figures:
        # (j)'s clients are sockets here and in the gateway, which inherits this limit.
        try:
            raise_open_files(_clients.files_needed(args.scale))
        except OSError as exc:
            parser.error(f"figure (j): {exc}")
    rounds: list[list[Figure]] = []
    for i in range(args.rounds):
        async with platform(args.sync_interval) as env:
            figures = await run_all(env, args.scale, args.figures)
        rounds.append(figures)
        title = f"\nround {i + 1} of {args.rounds} (sync_interval {args.sync_interval})"
        print(table(figures, title), flush=True)
        if args.json:
            for f in figures:
                print(json.dumps({"round": i + 1, **f.__dict__}))
    if len(rounds) > 1:
        print(table(median_figures(rounds), f"\nmedians of {len(rounds)} rounds"))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
