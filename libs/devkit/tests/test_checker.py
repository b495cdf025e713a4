"""The checker finds each anomaly a user would notice, and passes a clean history."""

from __future__ import annotations

from runloom.devkit.checker import RunHistory, Seen, check


def _run(n: int, terminal: str = "run.completed") -> list[Seen]:
    return [Seen(i, f"e{i}", terminal if i == n else "step.progress") for i in range(1, n + 1)]


def test_a_clean_history_passes() -> None:
    events = _run(5)
    verdict = check(
        [RunHistory("r", acked=events, stream=events, archive=events, clients={"a": events})]
    )
    assert verdict.ok and verdict.runs == 1, verdict


def test_each_anomaly_is_counted() -> None:
    events = _run(5)
    lost = RunHistory("lost", acked=[*events, Seen(6, "x6")], stream=events, archive=events)
    dup = RunHistory(
        "dup", stream=events, archive=events, clients={"a": [*events[:3], *events[2:]]}
    )
    hole = RunHistory(
        "hole", stream=events, archive=events, clients={"a": [*events[:2], *events[3:]]}
    )
    reorder = RunHistory(
        "reorder", stream=events, archive=events, clients={"a": [events[1], events[0], *events[2:]]}
    )
    two_ends = [*_run(4), Seen(5, "e5", "run.failed")]
    terminal = RunHistory("terminal", stream=two_ends, archive=two_ends)
    after_end = RunHistory("after", stream=[*_run(4), Seen(5, "e5")], archive=_run(5))
    unarchived = RunHistory("archive", stream=events, archive=events[:4])
    ledger = RunHistory("ledger", stream=events, archive=events, usage_events=3, ledger=2)

    v = check([lost, dup, hole, reorder, terminal, after_end, unarchived, ledger])

    assert not v.ok
    assert v.lost == 1
    assert v.duplicates == 1
    assert v.holes >= 1
    assert v.reorders >= 1
    assert v.bad_terminal == 2
    assert v.archive_missing == 1
    assert v.ledger_mismatch == 1
