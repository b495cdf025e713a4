"""The CLI's live terminal view: what changed between two folded states, as lines to read.

Append-only (works in any terminal, a pipe or a log file): the plan and each step's status,
sources as they are found, the report as it streams, spend, deliverables, failure states.
`JsonView` prints the stored events instead, one JSON object a line, for scripts.
"""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Any, TextIO

import msgspec
from runloom.contracts.events import Event, RunQueued
from runloom.contracts.types import now
from runloom.runtime.runstate import RunState, StepState

ICONS = {"pending": "○", "running": "◐", "done": "✓", "failed": "✗", "skipped": "-"}
STATUS_TEXT = {
    "created": "queued",
    "queued": "queued",
    "running": "running",
    "waiting_clarification": "paused: waiting for your answer",
    "completed": "completed",
    "failed": "failed",
    "cancelled": "cancelled",
    "budget_stopped": "stopped: budget used up",
}


QUEUE_REASONS = {
    "tenant_concurrency": "your runs already working fill your share",
    "platform_busy": "the platform is busy",
}


def queued_text(q: RunQueued) -> str:
    """`queued (position N, why)`, as the CLI shows a run that waits to start."""
    running = f"; {q.running} of {q.limit} running" if q.limit is not None else ""
    return f"queued (position {q.position}, {QUEUE_REASONS.get(q.reason, q.reason)}{running})"


STALL_REASONS = {"event_store_full": "the event store is full"}


def status_text(run: dict[str, Any]) -> str:
    """A run's status as `runloom runs` shows it; a paused run says why and when it is tried
    again (`stalled`)."""
    status = str(run.get("status", ""))
    stalled = run.get("stalled")
    if not stalled:
        return status
    why = STALL_REASONS.get(stalled.get("reason", ""), stalled.get("reason", ""))
    retry = stalled.get("retry_at")
    when = f"; next try {_in_seconds(datetime.fromisoformat(retry))}" if retry else ""
    return f"{status}, paused ({why}{when})"


def money(usd: float) -> str:
    return f"${usd:.4f}" if 0 < usd < 0.01 else f"${usd:.2f}"


def _short(text: str, width: int = 90) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _in_seconds(at: datetime) -> str:
    secs = max(0.0, (at - now()).total_seconds())
    return f"{at.astimezone().strftime('%H:%M:%S')} (in {secs:.0f} s)"


class TerminalView:
    def __init__(self, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.color = self.out.isatty()
        self.in_report = False
        self.report_ends_line = True

    # -- plumbing ---------------------------------------------------------------------------

    def _style(self, text: str, code: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.color else text

    def _leave_report(self) -> None:
        """End the report's partial line before another line interrupts it."""
        if self.in_report and not self.report_ends_line:
            self.out.write("\n")
        self.in_report = False

    def line(self, text: str = "") -> None:
        self._leave_report()
        self.out.write(text + "\n")
        self.out.flush()

    def notice(self, text: str) -> None:
        self._leave_report()
        self.out.flush()
        self.err.write(self._style(f"· {text}", "2") + "\n")
        self.err.flush()

    def connection_lost(self, attempt: int, reason: str) -> None:
        self.notice(f"connection lost ({reason}) — reconnecting… (attempt {attempt})")

    def reconnected(self, after_seq: int) -> None:
        self.notice(f"reconnected — resuming after event {after_seq}, nothing repeated")

    # -- what changed -----------------------------------------------------------------------

    def show(self, before: RunState, after: RunState, event: Event) -> None:
        if event.type == "run.created":
            self.line(self._style(f"Run {after.run_id}", "1"))
            self.line(f"  {after.question}")
            if after.budget_usd is not None:
                self.line(f"  budget {money(after.budget_usd)}")
        if [s.step_id for s in before.steps] != [s.step_id for s in after.steps] and (
            event.type in ("plan.proposed", "plan.revised")
        ):
            self._plan(after, revised=event.type == "plan.revised")
        self._steps(before, after)
        self._sources(before, after)
        self._report(before, after)
        self._signals(before, after)
        self._deliverables(before, after)
        if after.terminal is not None and before.terminal is None:
            self._end(after)

    def _plan(self, st: RunState, *, revised: bool) -> None:
        self.line(self._style("Plan" + (" (revised)" if revised else ""), "1") + ":")
        groups: dict[int, int] = {}
        for s in st.steps:
            if s.parallel_group is not None:
                groups[s.parallel_group] = groups.get(s.parallel_group, 0) + 1
        for i, s in enumerate(st.steps, 1):
            lane = ""
            if s.parallel_group is not None and groups[s.parallel_group] > 1:
                lane = f"  ‖ parallel group {s.parallel_group}"
            kind = "" if s.kind == "research" else f" [{s.kind}]"
            self.line(f"  {i}. {s.title}{kind}{lane}")

    def _steps(self, before: RunState, after: RunState) -> None:
        old = {s.step_id: s for s in before.steps}
        for s in after.steps:
            prev = old.get(s.step_id)
            if prev is not None and prev.status == s.status:
                continue
            if prev is None and s.status == "pending":
                continue
            self.line(self._step_line(s, after))

    def _step_line(self, s: StepState, st: RunState) -> str:
        icon = ICONS.get(s.status, "?")
        lane = " ‖" if s.parallel_group is not None else ""
        text = f"  {icon} {s.status:<8} {s.title}{lane}"
        if s.status == "done":
            n = s.source_count
            found = f"{n} source{'s' if n != 1 else ''} · " if s.kind == "research" else ""
            return self._style(f"{text} — {found}{money(st.spent_usd)} spent", "32")
        if s.status in ("failed", "skipped"):
            return self._style(f"{text}: {s.error or 'no reason given'}", "33")
        return text

    def _sources(self, before: RunState, after: RunState) -> None:
        for i, (sid, src) in enumerate(after.sources.items(), 1):
            if sid not in before.sources:
                self.line(f"      + [{i}] {src.title} — “{_short(src.passage, 70)}”")

    def _report(self, before: RunState, after: RunState) -> None:
        if after.report_text == before.report_text:
            return
        if not after.report_text.startswith(before.report_text):
            self.line(self._style("Report (rewritten):", "1"))
            new = after.report_text
        else:
            new = after.report_text[len(before.report_text) :]
            if not before.report_text:
                self.line(self._style("Report:", "1"))
        self.out.write(new)
        self.out.flush()
        self.in_report = True
        self.report_ends_line = new.endswith("\n")

    def _signals(self, before: RunState, after: RunState) -> None:
        if after.queued is not None and after.queued != before.queued:
            self.line(self._style(f"  ⧗ {queued_text(after.queued)}", "33"))
        if after.rate_limited is not None and after.rate_limited != before.rate_limited:
            r = after.rate_limited
            self.line(
                self._style(
                    f"  ⚠ rate limited by {r.provider}: "
                    f"the run retries at {_in_seconds(r.retry_at)}",
                    "33",
                )
            )
        if after.clarification is not None and before.clarification is None:
            self.line(self._style(f"  ? The run asks: {after.clarification.question}", "1;33"))
        if before.clarification is not None and after.clarification is None and not after.ended:
            self.line("  ✓ answered; the run continues")
        if after.billing_waiting != before.billing_waiting and not after.ended:
            self.line(
                "  ⏸ billing does not answer: spending paused, the run waits"
                if after.billing_waiting
                else "  ▶ billing is back; the run continues"
            )
        if after.cancel_requested and not before.cancel_requested:
            self.line(self._style("  ■ cancel requested", "33"))
        if after.status == "running" and before.status == "created":
            self.line("  ▶ started")
        elif after.started_count > before.started_count > 0:
            self.line("  ↻ another worker took the run over; completed steps are not repeated")

    def _deliverables(self, before: RunState, after: RunState) -> None:
        for kind, d in after.deliverables.items():
            prev = before.deliverables.get(kind)
            if prev is not None and (prev.status, prev.attempt) == (d.status, d.attempt):
                continue
            if d.status == "ready":
                formats = ", ".join(a.format for a in d.artifacts)
                self.line(self._style(f"  ⤓ {kind} ready ({formats})", "32"))
            elif d.status == "failed":
                of = f"/{d.max_attempts}" if d.max_attempts else ""
                then = "retrying" if d.will_retry else "failed for good"
                self.line(
                    self._style(
                        f"  ✗ {kind} attempt {d.attempt}{of} failed, {then}: {d.error}", "33"
                    )
                )
            elif d.status == "requested" and prev is None:
                self.line(f"  … {kind} requested")

    def _end(self, st: RunState) -> None:
        t = st.terminal
        assert t is not None
        label = STATUS_TEXT[st.status]
        tail = f" — spent {money(st.spent_usd)}"
        if st.budget_usd is not None:
            tail += f" of {money(st.budget_usd)}"
        color = "1;32" if st.status == "completed" and not st.partial else "1;33"
        self.line(self._style(f"● {label}{' (partial)' if st.partial else ''}{tail}", color))
        for m in st.missing:
            self.line(f"  missing: {m}")
        data = t.data
        if t.type == "run.budget_stopped":
            kept = data.get("kept") or []
            self.line(f"  kept: {', '.join(kept) if kept else 'nothing had been produced yet'}")
        elif t.type == "run.failed":
            self.line(f"  {data.get('reason', 'error')}: {data.get('error')}")
        elif t.type == "run.cancelled" and data.get("reason"):
            self.line(f"  reason: {data['reason']}")


class JsonView(TerminalView):
    """One stored event a line (JSON) on stdout; notices stay on stderr."""

    def show(self, before: RunState, after: RunState, event: Event) -> None:
        self.out.write(msgspec.json.encode(event).decode() + "\n")
        self.out.flush()
