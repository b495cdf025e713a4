"""One run, driven by the replica that owns it: research_report from plan to terminal event.

The flow reads top to bottom in `RunDriver._work`: start, clarify or plan, research
(`research.py`), write (`writing.py`), store and deliver (`delivery.py`), end. The phases see
the run through `phase.RunContext` (emit, catch up, checkpoints, state), which the driver
implements; they do not import it.

Every event has a deterministic id (`<run_id>:<key>`), so a replica that takes a run over
replays the stored events, skips what is already there and carries on: no completed step is
run again, no source or event is written twice. Written sections and each step's search hits
are checkpointed in Postgres, so the new owner does not pay for them again either.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

import msgspec
from opentelemetry import trace
from runloom.billing_client import BudgetExceeded
from runloom.contracts import subjects
from runloom.contracts.events import (
    ClarificationRequested,
    Event,
    PlanProposed,
    PlanStep,
    RunBudgetStopped,
    RunCancelled,
    RunCompleted,
    RunFailed,
    RunStarted,
)
from runloom.contracts.headers import Header
from runloom.contracts.kinds import DEFAULT_SKILL
from runloom.contracts.types import now
from runloom.corpus import store as corpus
from runloom.orchestrator import delivery, planner, research, retrieval, writing
from runloom.orchestrator.phase import Services
from runloom.runtime.runstate import RunState, fold
from runloom.runtime.telemetry import context_from_traceparent, span_context_of, work_span

log = logging.getLogger(__name__)

Outcome = Literal[
    "missing", "ended", "cancelled", "paused", "failed", "budget_stopped", "completed"
]
"""How far one drive of a run went (logs, metrics, tests)."""

MAX_STARTS = 6
"""A run taken over this many times (each start crashed) fails instead of looping forever."""


@dataclass
class _Budget:
    exc: BudgetExceeded


@dataclass
class RunDriver:
    svc: Services
    run_id: str
    tenant_id: str
    command_id: str
    existing: dict[str, Event] = field(default_factory=dict)
    state: RunState = field(default_factory=RunState)
    read_pos: int = 0
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    _confirming: asyncio.Task[None] | None = None

    # -- the log ------------------------------------------------------------------------------

    def eid(self, key: str) -> str:
        return f"{self.run_id}:{key}"

    async def emit(
        self, payload: msgspec.Struct, key: str, *, cause: str | Event | None = None
    ) -> Event:
        """Append once: an event whose id is already stored is returned as it is."""
        event_id = self.eid(key)
        found = self.existing.get(event_id)
        if found is not None:
            return found
        causation = cause.id if isinstance(cause, Event) else cause
        ev = await self.svc.log.append(
            self.run_id,
            self.tenant_id,
            payload,
            event_id=event_id,
            causation_id=causation or self.command_id,
        )
        self.existing[event_id] = ev
        return ev

    async def catch_up(self) -> RunState:
        """Read events stored since the last read and fold them in."""
        new: list[Event] = []
        async for se in self.svc.log.read(self.run_id, after_stream_seq=self.read_pos):
            self.read_pos = max(self.read_pos, se.stream_seq)
            new.append(se.event)
            self.existing.setdefault(se.event.id, se.event)
        if new:
            self.state = fold(new, self.state)
        if self.state.cancel_requested and not self.cancelled.is_set():
            self.cancelled.set()
        return self.state

    async def _on_event(self, msg: Any) -> None:
        # A wake-up only: what counts is what catch_up() reads back from the log.
        self.wakeup.set()
        if (msg.headers or {}).get(Header.EVENT_TYPE) == "cancel.requested":
            if self._confirming is None or self._confirming.done():
                self._confirming = asyncio.create_task(self._confirm_cancel())

    async def _confirm_cancel(self, within: float = 2.0) -> None:
        """Read the log until the cancel request is there (a subscriber may hear of a message
        before the stream has stored it, and a rejected append is heard too)."""
        deadline = time.monotonic() + within
        while not self.cancelled.is_set() and time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                await self.catch_up()
            if not self.cancelled.is_set():
                await asyncio.sleep(0.05)

    # -- the whole run -----------------------------------------------------------------------

    async def drive(self) -> Outcome:
        """Take the run as far as it goes now; returns what happened (for logs and tests)."""
        sub = await self.svc.nc.subscribe(subjects.run_events(self.run_id), cb=self._on_event)
        try:
            await self.catch_up()
            st = self.state
            if st.run_id is None or st.question is None:
                return "missing"
            if st.terminal is not None:
                return "ended"
            if st.cancel_requested:
                await self._cancelled()
                return "cancelled"
            if st.status == "waiting_clarification":
                return "paused"
            if st.started_count >= MAX_STARTS:
                await self.emit(
                    RunFailed(
                        error=f"The run was started {st.started_count} times and never finished; "
                        "it was stopped so it does not loop. The orchestrator logs say why.",
                        reason="internal",
                    ),
                    "failed",
                )
                return "failed"
            work = asyncio.create_task(self._traced_work())
            stop = asyncio.create_task(self.cancelled.wait())
            try:
                done, _ = await asyncio.wait({work, stop}, return_when=asyncio.FIRST_COMPLETED)
            except asyncio.CancelledError:  # this replica is shutting down: stop working
                work.cancel()
                stop.cancel()
                await asyncio.wait({work}, timeout=1.0)
                raise
            if work in done:
                stop.cancel()
                return work.result()
            work.cancel()
            await asyncio.wait({work}, timeout=1.0)
            await self._cancelled()
            return "cancelled"
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
            if self._confirming is not None:
                self._confirming.cancel()
            self.svc.log.forget(self.run_id)

    async def _cancelled(self) -> None:
        await self.emit(
            RunCancelled(reason="cancelled on request"),
            "cancelled",
            cause=self.state.cancel_event_id,
        )

    async def _traced_work(self) -> Outcome:
        """`_work` in one span of the run's trace (the trace its `run.created` carries).

        The first delivery of a start command is already in that trace (the span is its
        child); a redelivery, a takeover or a resume is not: then the span joins the run's
        trace under its creation and links to what woke it and to the attempt before it.
        """
        here = trace.get_current_span().get_span_context()
        root = span_context_of(self.state.trace)
        parent = None
        links: list[trace.SpanContext | None] = [span_context_of(self.state.started_trace)]
        if root is not None and here.trace_id != root.trace_id:
            parent = context_from_traceparent(self.state.trace)
            links.append(here)
        attributes = {
            "runloom.run_id": self.run_id,
            "runloom.attempt": self.state.started_count + 1,
            "runloom.worker": self.svc.worker,
        }
        with work_span(f"run {DEFAULT_SKILL}", parent=parent, links=links, attributes=attributes):
            return await self._work()

    async def _work(self) -> Outcome:
        st = self.state
        answer = st.answer
        question = st.question or ""
        full = f"{question} {answer}" if answer else question
        # Embeddings are computed while events are stored: the question's (for the plan's
        # aspects) during run.started, the sub-questions' during plan.proposed.
        ahead = retrieval.prefetch([full])
        started = await self.emit(
            RunStarted(worker=self.svc.worker, attempt=st.started_count + 1),
            f"started:{st.started_count + 1}",
        )
        subs = await self._saved_plan()
        if subs is None:
            freqs, total = await corpus.term_frequencies(
                self.svc.pool, self.tenant_id, planner.key_terms(full)
            )
            if not st.steps and answer is None:
                reason = planner.too_vague(question, freqs, total)
                if reason is None and not any(freqs.values()):
                    reason = (
                        "Nothing in your documents matches any term of the question. Which "
                        "topic should the report cover, in other words?"
                    )
                if reason is not None:
                    await self._pause(reason, started)
                    return "paused"
            common = frozenset(t for t, n in freqs.items() if total and n > 0.2 * total)
            await ahead
            aspects = await retrieval.aspects(self.svc.pool, self.tenant_id, full)
            made = planner.plan(question, answer, common, aspects)
            await self.save("plan", [dataclasses.asdict(s) for s in made])
            subs = await self._saved_plan()
            assert subs is not None
        ahead = retrieval.prefetch([s.meaning for s in subs])
        with contextlib.suppress(Exception):
            await self.svc.pool.execute("DELETE FROM paused_runs WHERE run_id=$1", self.run_id)
        plan_ev = await self.emit(
            PlanProposed(
                steps=[
                    PlanStep(
                        step_id=s.research_step, title=s.title, kind="research", parallel_group=1
                    )
                    for s in subs
                ]
                + [PlanStep(step_id=s.write_step, title=s.title, kind="write") for s in subs],
                rationale="One research sub-agent per sub-question, in parallel; then one "
                "section per sub-question, written only from the passages found.",
            ),
            "plan",
            cause=started,
        )
        budget: _Budget | None = None
        hits: dict[int, list[corpus.Hit]] = {}
        await ahead
        try:
            hits = await research.research(self, subs, plan_ev)
        except* BudgetExceeded as eg:
            budget = _Budget(eg.exceptions[0])  # type: ignore[arg-type]
        await self.catch_up()  # sources in log order: their reference numbers
        if budget is None:
            try:
                written = await writing.write(self, subs, hits)
            except writing.BudgetStop as stop:
                budget, written = _Budget(stop.budget), stop.written
        else:
            written = await writing.write_done_only(self, subs)
        sections, missing = written.sections, written.missing
        for s in subs:
            step = self.state.step(s.research_step)
            if step is not None and step.status == "failed" and step.error:
                missing.insert(0, f"Sub-question '{s.title}': {step.error}")
        if budget is None and not sections:
            await self.emit(
                RunFailed(
                    error="No section of the report could be written: "
                    + ("; ".join(missing) or "the sources did not support any claim."),
                    reason="error",
                ),
                "failed",
            )
            return "failed"
        content = writing.content(self, subs, sections, missing, plan_ev)
        stored = await delivery.store(self, content)
        kinds = delivery.kinds(self)
        await delivery.request(self, kinds, stored)
        missing += await delivery.await_ready(self, kinds)
        await self.catch_up()  # usage recorded on the way: what the run spent
        if budget is not None:
            exc = budget.exc
            kept = [f"content model ({len(sections)} sections)"] + [
                f"{k} deliverable"
                for k in kinds
                if (d := self.state.deliverables.get(k)) and d.status == "ready"
            ]
            # Billing's refusal counts holds of calls that were then cancelled and released; for
            # the run's own budget the user is told what the run really spent (its usage events).
            spent = self.state.spent_usd if exc.scope == "run" else exc.spent_usd
            await self.emit(
                RunBudgetStopped(
                    scope=exc.scope, spent_usd=spent, budget_usd=exc.budget_usd, kept=kept
                ),
                "budget_stopped",
                cause=stored,
            )
            return "budget_stopped"
        await self.emit(
            RunCompleted(
                partial=bool(missing),
                missing=missing,
                summary=f"{len(sections)} sections, {sum(len(s.claims) for s in sections)} "
                f"cited claims from {len(content.sources)} sources",
                spent_usd=self.state.spent_usd,
            ),
            "completed",
            cause=stored,
        )
        return "completed"

    async def _saved_plan(self) -> list[planner.SubQuestion] | None:
        """The plan as first made (a takeover must not re-plan against a changed corpus)."""
        saved = await self.checkpoint("plan")
        return None if saved is None else [planner.SubQuestion(**s) for s in saved]

    async def _pause(self, reason: str, cause: Event) -> None:
        timeout = self.svc.options.clarification_timeout_s
        deadline = now() + timedelta(seconds=timeout)
        n = len(self.state.clarifications) + 1
        await self.emit(
            ClarificationRequested(
                question="Could you make the question more specific? " + reason,
                reason=reason,
                timeout_s=timeout,
                deadline=deadline,
            ),
            f"clarification:{n}",
            cause=cause,
        )
        await self.svc.pool.execute(
            "INSERT INTO paused_runs(run_id, tenant_id, deadline) VALUES ($1,$2,$3)"
            " ON CONFLICT (run_id) DO UPDATE SET deadline=EXCLUDED.deadline",
            self.run_id,
            self.tenant_id,
            deadline,
        )

    # -- research: one sub-agent per sub-question, in parallel ---------------------------------

    async def checkpoint(self, key: str) -> Any:
        return await self.svc.pool.fetchval(
            "SELECT value FROM run_checkpoints WHERE run_id=$1 AND key=$2", self.run_id, key
        )

    async def save(self, key: str, value: Any) -> None:
        await self.svc.pool.execute(
            "INSERT INTO run_checkpoints(run_id, key, value) VALUES ($1,$2,$3)"
            " ON CONFLICT (run_id, key) DO NOTHING",
            self.run_id,
            key,
            value,
        )
