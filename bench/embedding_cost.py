"""`python -m bench.embedding_cost [--documents 12]`: what embedding a document costs.

Takes every k-th document of the default corpus (the Python docs topics), chunks it as the
corpus stores it, and runs the model's forward pass on every chunk (the shipped cache is not
consulted: this is what an uploaded document of the same size costs the orchestrator's
embedding job). Prints milliseconds per chunk and per document (wall and CPU: on a busy
machine the wall time is mostly waiting for a core), the default corpus's whole cost
extrapolated from them, and the 1-minute load average before and after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from runloom.corpus import embed, store, vectors
from runloom.corpus import text as textlib


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.embedding_cost")
    parser.add_argument("--documents", type=int, default=12, help="how many documents to embed")
    args = parser.parse_args()
    corpus = store.default_corpus()
    chunked = [
        [
            vectors.passage_text(store.clean_title(title), piece)
            for piece in textlib.chunk(store.clean_text(body))
        ]
        for _, title, body in corpus
    ]
    step = max(1, len(corpus) // max(1, args.documents))
    sample = chunked[::step][: args.documents]
    embedder = embed.shared()
    started = time.perf_counter()
    embedder.load()
    load_s = time.perf_counter() - started
    embedder.embed(["warm up the forward pass"])
    load_before = os.getloadavg()[0]
    per_doc: list[float] = []
    per_chunk: list[float] = []
    cpu_doc: list[float] = []
    for texts in sample:
        t0, c0 = time.perf_counter(), time.thread_time()
        embedder.embed(texts)
        took, cpu = time.perf_counter() - t0, time.thread_time() - c0
        per_doc.append(took)
        per_chunk.append(took / len(texts))
        cpu_doc.append(cpu)
    load_after = os.getloadavg()[0]
    chunks = sum(len(t) for t in sample)
    total_chunks = sum(len(t) for t in chunked)
    chars = sum(len(x) for t in sample for x in t)
    print(
        f"model load {load_s * 1000:.0f} ms; {len(sample)} documents, {chunks} chunks "
        f"({chars / chunks:.0f} characters each on average), one BLAS thread"
    )
    print(
        f"per chunk: median {statistics.median(per_chunk) * 1000:.0f} ms, "
        f"mean {sum(per_doc) / chunks * 1000:.0f} ms wall; "
        f"{sum(cpu_doc) / chunks * 1000:.0f} ms of CPU (the forward pass runs on this thread)"
    )
    print(
        f"per document: median {statistics.median(per_doc) * 1000:.0f} ms wall, "
        f"{statistics.median(cpu_doc) * 1000:.0f} ms CPU "
        f"(these documents average {chunks / len(sample):.1f} chunks; the default corpus "
        f"{total_chunks / len(corpus):.1f})"
    )
    print(
        f"the default corpus ({len(corpus)} documents, {total_chunks} chunks) at this rate: "
        f"{sum(per_doc) / chunks * total_chunks:.0f} s wall, "
        f"{sum(cpu_doc) / chunks * total_chunks:.0f} s CPU of forward passes (it ships its "
        "embeddings, so loading it runs none)"
    )
    print(f"load average (1 min): {load_before:.1f} before, {load_after:.1f} after")


if __name__ == "__main__":
    main()
