"""`python -m evaluation [--sections]` (`make eval`): the research quality figures.

Starts a private PostgreSQL, loads the default corpus for one tenant, evaluates every question
of the set in each mode and prints the figures (and, with --sections, every written section).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import tempfile
import time
from pathlib import Path

from runloom.corpus import store
from runloom.devkit import database
from runloom.devkit.embedded import PostgresServer, free_port
from runloom.orchestrator.evaluation import MODES, CaseResult, cases, evaluate_all, summarize
from runloom.runtime import db


def report(results: list[CaseResult], *, sections: bool) -> str:
    lines = [
        f"{len(cases())} questions over the default corpus; 5 passages per sub-question",
        "",
        f"{'mode':<8} {'recall@5':>9} {'recall@10':>10} {'run recall':>11} "
        f"{'sections':>9} {'on topic':>9} {'share':>6} {'dropped':>8}",
    ]
    for mode in MODES:
        s = summarize(results, mode)
        lines.append(
            f"{mode:<8} {s.recall_at_5:>9.2f} {s.recall_at_10:>10.2f} {s.run_recall:>11.2f} "
            f"{s.sections:>9} {s.on_topic:>9} {s.on_topic_share:>6.2f} {s.dropped:>8}"
        )
    lines += ["", "per question (run recall before -> hybrid; on-topic sections/written)"]
    by_q: dict[str, dict[str, CaseResult]] = {}
    for r in results:
        by_q.setdefault(r.case.question, {})[r.mode] = r
    for q, modes in by_q.items():
        b, h = modes["before"], modes["hybrid"]
        lines.append(
            f"  {b.run_recall:.2f} -> {h.run_recall:.2f}   {b.on_topic}/{len(b.sections)} -> "
            f"{h.on_topic}/{len(h.sections)}   {q}"
        )
        if sections:
            for r in modes.values():
                lines.append(f"    [{r.mode}]")
                for sec in r.sections:
                    mark = "on topic" if sec.on_topic else "OFF TOPIC"
                    lines.append(f"      ## {sec.title} ({mark}) - {sec.question}")
                    lines += [f"         - {text} [{title}]" for text, title in sec.claims]
                lines += [f"      (left out: {d})" for d in r.dropped]
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m evaluation")
    parser.add_argument("--sections", action="store_true", help="print every written section")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    root = Path(tempfile.mkdtemp(prefix="runloom-eval-"))
    pg = PostgresServer(root / "pg", free_port())
    try:
        pg.start()
        await database.provision(pg.url, database.new_passwords())
        pool = await db.create_pool(database.admin_url(pg.url), max_size=4)
        try:
            started = time.monotonic()
            await store.seed_default_corpus(pool, "eval")
            loaded = time.monotonic() - started
            started = time.monotonic()
            results = await evaluate_all(pool, "eval")
            took = time.monotonic() - started
        finally:
            await pool.close()
    finally:
        pg.remove_data()
        shutil.rmtree(root, ignore_errors=True)
    print(report(results, sections=args.sections))
    print(f"\ncorpus loaded in {loaded:.1f} s; evaluation took {took:.1f} s")


if __name__ == "__main__":
    asyncio.run(main())
