"""One run, driven by the replica that owns it: research_report from plan to terminal event.

Every event has a deterministic id (`<run_id>:<key>`), so a replica that takes a run over
replays the stored events, skips what is already there and carries on: no completed step is
run again, no source or event is written twice. Written sections and each step's search hits
are checkpointed in Postgres, so the new owner does not pay for them again either.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import msgspec
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from runloom.contracts import subjects
from runloom.contracts.commands import DeliverableJob
from runloom.contracts.content import Claim, ContentModel, Section, Source, content_hash
from runloom.contracts.events import (
    ClarificationRequested,
    ContentStored,
    DeliverableRequested,
    Event,
    MessageDelta,
    PlanProposed,
    PlanStep,
    RateLimited,
    RunBudgetStopped,
    RunCancelled,
    RunCompleted,
    RunFailed,
    RunStarted,
    SourceFound,
    StepCompleted,
    StepFailed,
    StepProgress,
    StepStarted,
    ToolCalled,
    ToolResult,
    Usage,
)
from runloom.orchestrator import citations, corpus, planner
from runloom.orchestrator import text as textlib
from runloom.orchestrator.config import OrchestratorOptions
from runloom.orchestrator.metering import BudgetExceeded, Meter
from runloom.orchestrator.providers import (
    Passage,
    Provider,
    ProviderError,
    WriteRequest,
    WriteResult,
)
from runloom.runtime import bus
from runloom.runtime.eventlog import EventLog
from runloom.runtime.runstate import RunState, fold

log = logging.getLogger(__name__)

DEFAULT_DELIVERABLES = ("report", "website", "slides")
MAX_STARTS = 6
"""A run taken over this many times (each start crashed) fails instead of looping forever."""


@dataclass
class _Budget:
    exc: BudgetExceeded


@dataclass
class Services:
    """What a run needs from its replica."""

    nc: NATS
    js: JetStreamContext
    pool: asyncpg.Pool
    log: EventLog
    meter: Meter
    provider: Provider
    options: OrchestratorOptions
    worker: str


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
    cancel_event_id: str | None = None
    _claimed_sources: set[str] = field(default_factory=set)
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
            self.cancel_event_id = (
                next((e.id for e in reversed(new) if e.type == "cancel.requested"), None)
                or self.cancel_event_id
            )
            self.cancelled.set()
        return self.state

    async def _on_event(self, msg: Any) -> None:
        # A wake-up only: what counts is what catch_up() reads back from the log.
        self.wakeup.set()
        if (msg.headers or {}).get("Runloom-Event-Type") == "cancel.requested":
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

    async def drive(self) -> str:
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
            work = asyncio.create_task(self._work())
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
            RunCancelled(reason="cancelled on request"), "cancelled", cause=self.cancel_event_id
        )

    async def _work(self) -> str:
        st = self.state
        started = await self.emit(
            RunStarted(worker=self.svc.worker, attempt=st.started_count + 1),
            f"started:{st.started_count + 1}",
        )
        answer = self._answer()
        subs = await self._saved_plan()
        if subs is None:
            question = st.question or ""
            full = f"{question} {answer}" if answer else question
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
            await self._save(
                "plan", [dataclasses.asdict(s) for s in planner.plan(question, answer, common)]
            )
            subs = await self._saved_plan()
            assert subs is not None
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
        try:
            hits = await self._research(subs, plan_ev)
        except* BudgetExceeded as eg:
            budget = _Budget(eg.exceptions[0])  # type: ignore[arg-type]
        await self.catch_up()  # sources in log order: their reference numbers
        sections: list[Section] = []
        missing: list[str] = []
        if budget is None:
            try:
                await self._write(subs, hits, sections, missing)
            except BudgetExceeded as exc:
                budget = _Budget(exc)
        else:
            await self._write_done_only(subs, sections)
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
        content = self._content(subs, sections, missing, plan_ev)
        stored = await self._store(content)
        kinds = self._kinds()
        await self._request_deliverables(kinds, stored)
        missing += await self._await_deliverables(kinds)
        await self.catch_up()  # usage recorded on the way: what the run spent
        if budget is not None:
            exc = budget.exc
            kept = [f"content model ({len(sections)} sections)"] + [
                f"{k} deliverable"
                for k in kinds
                if (d := self.state.deliverables.get(k)) and d.status == "ready"
            ]
            await self.emit(
                RunBudgetStopped(
                    scope=exc.scope, spent_usd=exc.spent_usd, budget_usd=exc.budget_usd, kept=kept
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

    def _answer(self) -> str | None:
        answers = [
            e.data.get("answer", "")
            for e in sorted(self.existing.values(), key=lambda e: e.seq)
            if e.type == "clarification.answered"
        ]
        return answers[-1] if answers else None

    async def _saved_plan(self) -> list[planner.SubQuestion] | None:
        """The plan as first made (a takeover must not re-plan against a changed corpus)."""
        saved = await self._checkpoint("plan")
        return None if saved is None else [planner.SubQuestion(**s) for s in saved]

    async def _pause(self, reason: str, cause: Event) -> None:
        timeout = self.svc.options.clarification_timeout_s
        deadline = datetime.now(UTC) + timedelta(seconds=timeout)
        n = sum(1 for e in self.existing.values() if e.type == "clarification.requested") + 1
        await self.emit(
            ClarificationRequested(
                question="Could you make the question more specific? " + reason,
                reason=reason,
                timeout_s=timeout,
                deadline=deadline.isoformat().replace("+00:00", "Z"),
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

    async def _checkpoint(self, key: str) -> Any:
        return await self.svc.pool.fetchval(
            "SELECT value FROM run_checkpoints WHERE run_id=$1 AND key=$2", self.run_id, key
        )

    async def _save(self, key: str, value: Any) -> None:
        await self.svc.pool.execute(
            "INSERT INTO run_checkpoints(run_id, key, value) VALUES ($1,$2,$3)"
            " ON CONFLICT (run_id, key) DO NOTHING",
            self.run_id,
            key,
            value,
        )

    async def _research(
        self, subs: list[planner.SubQuestion], plan_ev: Event
    ) -> dict[int, list[corpus.Hit]]:
        self._claimed_sources = set(self.state.sources)
        results: dict[int, list[corpus.Hit]] = {}
        async with asyncio.TaskGroup() as tg:
            for s in subs:
                tg.create_task(self._agent(s, plan_ev, results))
        return results

    async def _agent(
        self, s: planner.SubQuestion, plan_ev: Event, results: dict[int, list[corpus.Hit]]
    ) -> None:
        step_id = s.research_step
        saved = await self._checkpoint(f"hits:{step_id}")
        step = self.state.step(step_id)
        if saved is not None and step is not None and step.status in ("done", "failed"):
            results[s.index] = [corpus.Hit(**h) for h in saved]
            return
        started = await self.emit(
            StepStarted(step_id=step_id, title=s.title, agent=f"researcher-{s.index}"),
            f"{step_id}:started",
            cause=plan_ev,
        )
        hits: list[corpus.Hit] = []
        result: Event | None = None
        used = s.queries[0]
        for attempt, query in enumerate(s.queries, start=1):
            hits, result = await self._search(s, query, attempt, started)
            used = query
            if hits:
                break  # the more precise query found passages: no need to widen it
        assert result is not None
        await self._save(f"hits:{step_id}", [msgspec.to_builtins(h.__dict__) for h in hits])
        results[s.index] = hits
        for h in hits:
            if h.chunk_id in self._claimed_sources:
                continue  # already found (by this or another sub-agent): never twice
            self._claimed_sources.add(h.chunk_id)
            await self.emit(
                SourceFound(
                    source_id=h.chunk_id,
                    title=h.title,
                    passage=textlib.normalize_space(h.text),
                    document_id=h.document_id,
                    url=h.url,
                    step_id=step_id,
                    score=round(h.rank, 6),
                ),
                f"source:{h.chunk_id}",
                cause=result,
            )
        if hits:
            await self.emit(
                StepProgress(step_id=step_id, message=f"kept {len(hits)} passages", fraction=1.0),
                f"{step_id}:progress",
                cause=result,
            )
            await self.emit(
                StepCompleted(
                    step_id=step_id,
                    summary=f"{len(hits)} passages for '{used}'",
                    source_count=len(hits),
                ),
                f"{step_id}:completed",
                cause=started,
            )
        else:
            await self.emit(
                StepFailed(
                    step_id=step_id,
                    error="no passage in the corpus matches "
                    + " nor ".join(f"'{q}'" for q in s.queries),
                    reason="no_results",
                ),
                f"{step_id}:failed",
                cause=started,
            )

    async def _search(
        self,
        s: planner.SubQuestion,
        query: str,
        attempt: int,
        started: Event,
    ) -> tuple[list[corpus.Hit], Event]:
        """One metered corpus search of a sub-agent: tool.called, the search, tool.result."""
        step_id = s.research_step
        key = f"{step_id}:search" if attempt == 1 else f"{step_id}:search:{attempt}"
        call_id = self.eid(key)
        limit = self.svc.options.hits_per_step
        called = await self.emit(
            ToolCalled(
                call_id=call_id,
                tool="corpus_search",
                arguments={"query": query, "limit": limit},
                step_id=step_id,
            ),
            f"{key}:called",
            cause=started,
        )
        meter = self.svc.meter
        res = await meter.reserve(
            run_id=self.run_id,
            tenant_id=self.tenant_id,
            kind="tool",
            estimated_usd=meter.estimate_tool("corpus_search"),
            reservation_id=call_id,
            tool="corpus_search",
            causation_id=called.id,
        )
        try:
            if self.svc.options.search_delay_s:
                await asyncio.sleep(self.svc.options.search_delay_s)
            # A replica taking over reuses what its predecessor's search returned.
            saved = await self._checkpoint(f"hits:{key}")
            if saved is not None:
                hits = [corpus.Hit(**h) for h in saved]
            else:
                hits = await corpus.search(self.svc.pool, self.tenant_id, query, limit=limit)
                await self._save(f"hits:{key}", [msgspec.to_builtins(h.__dict__) for h in hits])
        except BaseException:
            await meter.release(res)
            raise
        await meter.commit(
            res, Usage(tool_calls=1), usage_id=call_id, step_id=step_id, causation_id=called.id
        )
        result = await self.emit(
            ToolResult(
                call_id=call_id,
                tool="corpus_search",
                ok=True,
                result_count=len(hits),
                summary="; ".join(f"{h.title}: {h.headline}" for h in hits[:3])[:600] or None,
                step_id=step_id,
            ),
            f"{key}:result",
            cause=called,
        )
        return hits, result

    # -- writing: one section per sub-question, verified, then streamed -------------------------

    def _numbered(self) -> tuple[dict[str, int], dict[str, Source]]:
        numbers: dict[str, int] = {}
        sources: dict[str, Source] = {}
        for i, (sid, sf) in enumerate(self.state.sources.items(), start=1):
            numbers[sid] = i
            sources[sid] = Source(
                source_id=sid,
                title=sf.title,
                text=sf.passage,
                document_id=sf.document_id,
                url=sf.url,
            )
        return numbers, sources

    async def _write_done_only(self, subs: list[planner.SubQuestion], out: list[Section]) -> None:
        """After a budget stop: keep the sections already written, write no more."""
        for s in subs:
            saved = await self._checkpoint(f"section:{s.write_step}")
            step = self.state.step(s.write_step)
            if saved is not None and step is not None and step.status == "done":
                out.append(msgspec.convert(saved, Section))

    async def _write(
        self,
        subs: list[planner.SubQuestion],
        hits: dict[int, list[corpus.Hit]],
        out: list[Section],
        missing: list[str],
    ) -> None:
        numbers, sources = self._numbered()
        display: dict[str, int] = {}
        """Reference numbers as the reader sees them: in order of first citation."""
        report = _Reporter(self, self.svc.options.delta_interval_s)
        await report.add(citations.render_heading(self._title()), None)
        used: set[str] = set()
        for s in subs:
            step_id = s.write_step
            step = self.state.step(step_id)
            found = [h for h in hits.get(s.index, []) if h.chunk_id in sources]
            if not found:
                await self.emit(
                    StepFailed(
                        step_id=step_id,
                        error="nothing was found to write this section from",
                        reason="skipped",
                    ),
                    f"{step_id}:skipped",
                )
                continue
            if step is not None and step.status == "failed":
                missing.append(f"Section '{s.title}': {step.error}")
                continue
            started = await self.emit(
                StepStarted(step_id=step_id, title=f"Write: {s.title}", agent="writer"),
                f"{step_id}:started",
            )
            saved = await self._checkpoint(f"section:{step_id}")
            if saved is not None:
                section = msgspec.convert(saved, Section)
            else:
                try:
                    section = await self._compose(s, found, numbers, sources, used, started)
                except ProviderError as exc:
                    await self.emit(
                        StepFailed(
                            step_id=step_id,
                            error=f"writing failed: {exc}",
                            reason="provider_error",
                            retryable=exc.retryable,
                        ),
                        f"{step_id}:failed",
                        cause=started,
                    )
                    missing.append(f"Section '{s.title}': writing failed: {exc}")
                    continue
                await self._save(f"section:{step_id}", msgspec.to_builtins(section))
            used.update(c.text for c in section.claims)
            if section.claims:
                for sid in [c.source_id for cl in section.claims for c in cl.citations]:
                    display.setdefault(sid, len(display) + 1)
                for part in citations.render_section_parts(s.title, section.claims, display):
                    await report.add(part, section.section_id)
                out.append(section)
            await self.emit(
                StepCompleted(
                    step_id=step_id,
                    summary=f"{len(section.claims)} cited claims"
                    if section.claims
                    else "nothing new beyond the earlier sections",
                    source_count=len({c.source_id for cl in section.claims for c in cl.citations}),
                ),
                f"{step_id}:completed",
                cause=started,
            )
        cited = [sources[sid] for sid in sorted(display, key=display.__getitem__)]
        if cited:
            await report.add("\n" + citations.render_sources(cited, display), None)
        await report.flush()

    async def _compose(
        self,
        s: planner.SubQuestion,
        found: list[corpus.Hit],
        numbers: dict[str, int],
        sources: dict[str, Source],
        used: set[str],
        started: Event,
    ) -> Section:
        step_id = s.write_step
        provider = self.svc.provider
        request = WriteRequest(
            question=self.state.question or "",
            section_title=s.title,
            sub_question=s.question,
            avoid=sorted(used),
            passages=[
                Passage(
                    number=numbers[h.chunk_id],
                    source_id=h.chunk_id,
                    title=h.title,
                    text=sources[h.chunk_id].text,
                )
                for h in found
            ],
        )
        meter = self.svc.meter
        usage_id = self.eid(f"{step_id}:provider")
        res = await meter.reserve(
            run_id=self.run_id,
            tenant_id=self.tenant_id,
            kind="provider",
            estimated_usd=meter.estimate_provider(
                provider.name,
                provider.model,
                provider.prompt_tokens(request),
                request.max_output_tokens,
            ),
            reservation_id=usage_id,
            provider=provider.name,
            model=provider.model,
            causation_id=started.id,
        )
        result = WriteResult()
        limits = 0

        async def rate_limited(wait_s: float, attempt: int) -> None:
            nonlocal limits
            limits += 1
            at = datetime.now(UTC) + timedelta(seconds=wait_s)
            await self.emit(
                RateLimited(
                    provider=provider.name,
                    retry_at=at.isoformat().replace("+00:00", "Z"),
                    retry_after_s=wait_s,
                    attempt=attempt,
                    step_id=step_id,
                ),
                f"{step_id}:rate_limited:{limits}",
                cause=started,
            )

        tick = time.monotonic()
        progress = 0
        try:
            async for _ in provider.stream(request, result, rate_limited):
                if time.monotonic() - tick >= 1.0:
                    tick = time.monotonic()
                    progress += 1
                    await self.emit(
                        StepProgress(
                            step_id=step_id,
                            message=f"writing: {textlib.count_tokens(result.text)} tokens",
                        ),
                        f"{step_id}:progress:{progress}",
                        cause=started,
                    )
        except BaseException:
            await meter.release(res)
            raise
        await meter.commit(
            res, result.usage, usage_id=usage_id, step_id=step_id, causation_id=started.id
        )
        by_number = {numbers[sid]: src for sid, src in sources.items()}
        draft = citations.verify(result.text, by_number, claim_prefix=f"s{s.index}")
        claims = [c for c in draft.claims if c.text not in used]
        problems = citations.check(claims, sources)
        if problems:  # verify() only keeps found passages; this is the last line of defence
            raise ProviderError("citation check failed: " + "; ".join(problems))
        summary = None
        if draft.dropped:
            summary = f"{len(draft.dropped)} unsupported claim(s) dropped"
        return Section(section_id=f"s{s.index}", title=s.title, claims=claims, summary=summary)

    def _title(self) -> str:
        st = self.state
        return (
            st.title
            or (st.options.get("title") if st.options else None)
            or ((st.question or "Report").strip().rstrip("?").strip()[:120])
        )

    # -- content and deliverables ----------------------------------------------------------

    def _content(
        self,
        subs: list[planner.SubQuestion],
        sections: list[Section],
        missing: list[str],
        plan_ev: Event,
    ) -> ContentModel:
        _, sources = self._numbered()
        cited: dict[str, None] = {}
        for sec in sections:
            for claim in sec.claims:
                for c in claim.citations:
                    cited.setdefault(c.source_id, None)
        return ContentModel(
            run_id=self.run_id,
            title=self._title(),
            question=self.state.question or "",
            sections=sections,
            sources=[sources[sid] for sid in cited],
            summary=" ".join(sec.claims[0].text for sec in sections if sec.claims)[:1000] or None,
            partial=bool(missing),
            missing=list(missing),
            generated_at=plan_ev.time,
        )

    async def _store(self, content: ContentModel) -> Event:
        digest = content_hash(content)
        return await self.emit(ContentStored(content_hash=digest, content=content), "content")

    def _kinds(self) -> list[str]:
        kinds = (self.state.options or {}).get("deliverables")
        if kinds is None:
            return list(DEFAULT_DELIVERABLES)
        return [str(k) for k in kinds]

    async def _request_deliverables(self, kinds: list[str], stored: Event) -> None:
        digest = stored.data["content_hash"]
        for kind in kinds:
            job_id = hashlib.sha256(f"{self.run_id}:{kind}:{digest}".encode()).hexdigest()
            req = await self.emit(
                DeliverableRequested(kind=kind, job_id=job_id, content_hash=digest),
                f"deliverable:{kind}",
                cause=stored,
            )
            await bus.publish(
                self.svc.js,
                subjects.deliverable_job(kind),
                DeliverableJob(
                    job_id=job_id,
                    run_id=self.run_id,
                    tenant_id=self.tenant_id,
                    kind=kind,
                    content_hash=digest,
                    causation_id=req.id,
                ),
                msg_id=job_id,
            )

    async def _await_deliverables(self, kinds: list[str]) -> list[str]:
        """Wait until every deliverable is ready or failed for good; returns what is missing."""
        if not kinds:
            return []
        requested = [self.existing[self.eid(f"deliverable:{k}")] for k in kinds]
        first = min(_parse_time(e.time) for e in requested)
        deadline = first + self.svc.options.deliverables_timeout_s
        while True:
            self.wakeup.clear()
            st = await self.catch_up()
            pending = [k for k in kinds if not _final(st, k)]
            if not pending:
                break
            left = deadline - time.time()
            if left <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wakeup.wait(), timeout=min(left, 2.0))
        missing = []
        for k in kinds:
            d = self.state.deliverables.get(k)
            if (
                d is None
                or d.status in ("requested", "running")
                or (d.status == "failed" and d.will_retry)
            ):
                missing.append(
                    f"The {k} deliverable did not finish within "
                    f"{self.svc.options.deliverables_timeout_s:.0f} s"
                )
            elif d.status == "failed":
                missing.append(
                    f"The {k} deliverable failed after {d.attempt} attempt(s): {d.error}"
                )
        return missing


def _final(st: RunState, kind: str) -> bool:
    d = st.deliverables.get(kind)
    return d is not None and (d.status == "ready" or (d.status == "failed" and not d.will_retry))


def _cited(section: Section) -> set[str]:
    return {c.source_id for claim in section.claims for c in claim.citations}


def _parse_time(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


class _Reporter:
    """The report stream: coalesced message.delta events, at most one per `interval`.

    A replica taking over knows what was streamed already (`report_text`); the report is
    rebuilt deterministically from checkpoints, so only what lies beyond is emitted.
    """

    def __init__(self, run: RunDriver, interval: float) -> None:
        self.run = run
        self.interval = interval
        self.target = ""
        self.streamed = run.state.report_text
        parts = run.state.report_parts
        self.index = (max(parts) + 1) if parts else 0
        self.buffer = ""
        self.section: str | None = None
        self.last = 0.0

    async def add(self, text: str, section_id: str | None) -> None:
        self.target += text
        if len(self.target) <= len(self.streamed):
            return
        new = self.target[len(self.streamed) :]
        self.streamed += new
        if self.buffer and section_id != self.section:
            await self.flush()
        self.section = section_id
        self.buffer += new
        await self.flush()

    async def flush(self) -> None:
        if not self.buffer:
            return
        wait = self.last + self.interval - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        text, self.buffer = self.buffer, ""
        await self.run.emit(
            MessageDelta(stream="report", text=text, index=self.index, section_id=self.section),
            f"delta:{self.index}",
        )
        self.index += 1
        self.last = time.monotonic()


def claims_of(content: ContentModel) -> list[Claim]:
    return [c for s in content.sections for c in s.claims]


__all__ = ["MAX_STARTS", "RunDriver", "Services"]
