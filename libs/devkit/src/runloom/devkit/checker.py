"""A Jepsen-style checker over Runloom's dense per-run sequence.

For each run it compares what writers were acknowledged with what the stream holds, what the
Postgres archive holds and what every SSE client saw, and counts what a user would notice:
acknowledged events lost, duplicates, reorders, holes in the middle, runs without exactly one
terminal event (or with something after it), and a billing ledger that differs from the usage
events. Pure functions over plain data: the fault tests collect, this judges.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

TERMINAL = frozenset({"run.completed", "run.failed", "run.cancelled", "run.budget_stopped"})


@dataclass(frozen=True)
class Seen:
    """One event as some reader saw it."""

    seq: int
    id: str
    type: str = ""


@dataclass
class RunHistory:
    """Everything collected about one run."""

    run_id: str
    acked: list[Seen] = field(default_factory=list)
    """Events whose append a writer saw acknowledged (seq as the ack reported it)."""
    stream: list[Seen] = field(default_factory=list)
    archive: list[Seen] = field(default_factory=list)
    clients: dict[str, list[Seen]] = field(default_factory=dict)
    """Per SSE client (across its reconnects), in arrival order."""
    usage_events: float = 0.0
    """Sum of cost over the run's usage.recorded events."""
    ledger: float | None = None
    """Sum of cost in the billing ledger (None: not checked for this run)."""
    needs_terminal: bool = True


@dataclass
class Verdict:
    runs: int = 0
    lost: int = 0
    duplicates: int = 0
    reorders: int = 0
    holes: int = 0
    archive_missing: int = 0
    bad_terminal: int = 0
    ledger_mismatch: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (
            self.lost
            or self.duplicates
            or self.reorders
            or self.holes
            or self.archive_missing
            or self.bad_terminal
            or self.ledger_mismatch
        )

    def note(self, what: str) -> None:
        if len(self.problems) < 50:
            self.problems.append(what)


def _sequence_faults(events: Sequence[Seen]) -> tuple[int, int, int]:
    """(duplicates, reorders, holes) of one reader's view, which must be 1, 2, 3 … exactly."""
    dups = reorders = holes = 0
    seen: set[str] = set()
    expected = 1
    for e in events:
        if e.id in seen:
            dups += 1
            continue
        seen.add(e.id)
        if e.seq < expected:
            reorders += 1
        elif e.seq > expected:
            holes += e.seq - expected
            expected = e.seq + 1
        else:
            expected += 1
    return dups, reorders, holes


def check(histories: Iterable[RunHistory]) -> Verdict:
    v = Verdict()
    for h in histories:
        v.runs += 1
        stored = {e.id: e for e in h.stream}
        for e in h.acked:
            got = stored.get(e.id)
            if got is None:
                v.lost += 1
                v.note(f"{h.run_id}: acked {e.id} (seq {e.seq}) is not in the stream")
            elif got.seq != e.seq:
                v.reorders += 1
                v.note(f"{h.run_id}: {e.id} acked as seq {e.seq}, stored as {got.seq}")
        readers: Mapping[str, Sequence[Seen]] = {"stream": h.stream, **h.clients}
        for name, events in readers.items():
            d, r, holes = _sequence_faults(events)
            v.duplicates += d
            v.reorders += r
            v.holes += holes
            if d or r or holes:
                v.note(f"{h.run_id} {name}: {d} duplicates, {r} reorders, {holes} holes")
            for e in events:
                if e.id not in stored:
                    v.lost += 1
                    v.note(f"{h.run_id} {name}: saw {e.id} that the stream does not hold")
        for name, events in h.clients.items():
            if len(events) < len(h.stream) and h.needs_terminal:
                v.holes += len(h.stream) - len(events)
                v.note(f"{h.run_id} {name}: saw {len(events)} of {len(h.stream)} events")
        archived = {e.id for e in h.archive}
        missing = [e for e in h.stream if e.id not in archived]
        if missing:
            v.archive_missing += len(missing)
            v.note(f"{h.run_id}: {len(missing)} events not in the archive")
        if h.needs_terminal:
            terminals = [i for i, e in enumerate(h.stream) if e.type in TERMINAL]
            if len(terminals) != 1 or terminals[0] != len(h.stream) - 1:
                v.bad_terminal += 1
                v.note(f"{h.run_id}: terminal events at {terminals} of {len(h.stream)}")
        if h.ledger is not None and abs(h.ledger - h.usage_events) > 1e-9:
            v.ledger_mismatch += 1
            v.note(f"{h.run_id}: ledger {h.ledger} != usage events {h.usage_events}")
    return v
