"""A typical content model (6 sections, 20 sources) for tests, benchmarks and a quick look.

`python -m runloom.deliverables.sample OUT_DIR [REPEAT]` renders every format of it into OUT_DIR
and prints the render time of each (first run, and the median of REPEAT runs).
"""

from __future__ import annotations

import datetime as dt
import sys
import time
from pathlib import Path

from runloom.contracts.content import Citation, Claim, ContentModel, Section, Source

_TOPICS = [
    ("Durability of acknowledged writes", "fsync"),
    ("Ordering under concurrent writers", "sequence"),
    ("Replay and resumable streams", "cursor"),
    ("Idempotent background jobs", "idempotency"),
    ("Budgets and metering", "budget"),
    ("Failure as a visible state", "failure"),
    ("Operating a cluster", "replicas"),
    ("Security and tenancy", "tenant"),
]


def sample_content(sections: int = 6, sources: int = 20, claims: int = 4) -> ContentModel:
    """Deterministic; text includes accents, typographic quotes, Greek and HTML specials."""
    srcs = []
    for i in range(sources):
        topic = _TOPICS[i % len(_TOPICS)][1]
        srcs.append(
            Source(
                source_id=f"s{i + 1}",
                title=f"Notes on {topic} — part {i + 1} (Zürich & Δ-edition)",
                text=(
                    f"The {topic} study, part {i + 1}, observed that systems must state "
                    f"their {topic} guarantees explicitly. Measured results <b>vary</b> by "
                    f"workload; the naïve approach “fails” under load {i + 1}."
                ),
                document_id=f"doc-{i + 1}",
                url=f"https://example.org/{topic}/{i + 1}?a=1&b=2",
            )
        )
    secs = []
    k = 0
    for s in range(sections):
        title, topic = _TOPICS[s % len(_TOPICS)]
        cl = []
        for c in range(claims):
            a = srcs[k % sources]
            b = srcs[(k + 7) % sources]
            k += 1
            cl.append(
                Claim(
                    claim_id=f"c{s + 1}-{c + 1}",
                    text=(
                        f"Claim {s + 1}.{c + 1}: {topic} guarantees should be stated "
                        f"explicitly, since naïve defaults fail under load <script>x</script> "
                        f"& the cost is measurable."
                    ),
                    citations=[
                        Citation(source_id=a.source_id, passage=a.text.split(". ")[0]),
                        Citation(source_id=b.source_id, passage=b.text.split("; ")[1]),
                    ],
                    flagged=(s == 1 and c == claims - 1),
                )
            )
        secs.append(
            Section(
                section_id=f"sec{s + 1}",
                title=f"{s + 1}. {title}",
                claims=cl,
                summary=f"What the sources say about {topic}." if s % 2 == 0 else None,
            )
        )
    return ContentModel(
        run_id="run_SAMPLE",
        title="How should an agent platform keep its promises?",
        question="What do durable, ordered, idempotent event streams require in practice?",
        sections=secs,
        sources=srcs,
        summary="Six themes, each supported by cited passages from the corpus.",
        generated_at=dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
    )


def main(argv: list[str]) -> None:
    from runloom.deliverables.render import KINDS, Document, file_name

    out = Path(argv[1] if len(argv) > 1 else ".")
    repeat = int(argv[2]) if len(argv) > 2 else 5
    out.mkdir(parents=True, exist_ok=True)
    content = sample_content()
    print(f"{'kind':8} {'fmt':5} {'bytes':>9} {'first ms':>9} {'median ms':>9}  ({repeat} runs)")
    for kind, formats in KINDS.items():
        for fmt in formats:
            times = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                data = fmt.render(Document(content))
                times.append((time.perf_counter() - t0) * 1000)
            (out / file_name(content, fmt)).write_bytes(data)
            median = sorted(times)[len(times) // 2]
            print(f"{kind:8} {fmt.name:5} {len(data):>9,} {times[0]:9.1f} {median:9.1f}")


if __name__ == "__main__":
    main(sys.argv)
