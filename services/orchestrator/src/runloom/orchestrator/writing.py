"""Writing: one section per sub-question, from its passages only, verified, then streamed.

The provider writes claim lines; `citations.verify` keeps only what the sources support. Each
verified section is checkpointed before it streams, so a replica taking the run over streams
exactly what its predecessor had not (the report is rebuilt deterministically).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import timedelta

import msgspec
from opentelemetry.trace import SpanKind
from runloom.billing_client import BudgetExceeded
from runloom.contracts.content import ContentModel, Section, Source
from runloom.contracts.events import (
    Event,
    MessageDelta,
    RateLimited,
    StepCompleted,
    StepFailed,
    StepProgress,
    StepStarted,
)
from runloom.contracts.types import now
from runloom.corpus import store as corpus
from runloom.corpus import text as textlib
from runloom.orchestrator import citations, metrics, planner, provider_limits
from runloom.orchestrator.phase import RunContext
from runloom.orchestrator.providers import Passage, ProviderError, WriteRequest, WriteResult
from runloom.runtime.telemetry import work_span


def numbered(run: RunContext) -> tuple[dict[str, int], dict[str, Source]]:
    """The run's sources in log order, numbered for the writer's prompts."""
    numbers: dict[str, int] = {}
    sources: dict[str, Source] = {}
    for i, (sid, sf) in enumerate(run.state.sources.items(), start=1):
        numbers[sid] = i
        sources[sid] = Source(
            source_id=sid,
            title=sf.title,
            text=sf.passage,
            document_id=sf.document_id,
            url=sf.url,
        )
    return numbers, sources


@dataclass
class Written:
    """What the writing phase produced."""

    sections: list[Section] = field(default_factory=list)
    """The sections written and verified, in the plan's order."""
    missing: list[str] = field(default_factory=list)
    """What could not be written, and why, in words a reader understands."""


class BudgetStop(Exception):
    """A budget stopped the writing; `written` is what was written before it."""

    def __init__(self, budget: BudgetExceeded, written: Written) -> None:
        super().__init__(str(budget))
        self.budget = budget
        self.written = written


async def write_done_only(run: RunContext, subs: list[planner.SubQuestion]) -> Written:
    """After a budget stop: keep the sections already written, write no more."""
    written = Written()
    for s in subs:
        saved = await run.checkpoint(f"section:{s.write_step}")
        step = run.state.step(s.write_step)
        if saved is not None and step is not None and step.status == "done":
            written.sections.append(msgspec.convert(saved, Section))
    return written


async def write(
    run: RunContext,
    subs: list[planner.SubQuestion],
    hits: dict[int, list[corpus.Hit]],
) -> Written:
    """Write, verify, checkpoint and stream each section. Raises BudgetStop (with what was
    written so far) when a budget refuses the next call."""
    written = Written()
    try:
        await _write(run, subs, hits, written.sections, written.missing)
    except BudgetExceeded as exc:
        raise BudgetStop(exc, written) from exc
    return written


async def _write(
    run: RunContext,
    subs: list[planner.SubQuestion],
    hits: dict[int, list[corpus.Hit]],
    out: list[Section],
    missing: list[str],
) -> None:
    numbers, sources = numbered(run)
    display: dict[str, int] = {}
    """Reference numbers as the reader sees them: in order of first citation."""
    report = ReportStream(run, run.svc.options.delta_interval_s)
    await report.add(citations.render_heading(title(run)), None)
    used: set[str] = set()
    for s in subs:
        step_id = s.write_step
        step = run.state.step(step_id)
        found = [h for h in hits.get(s.index, []) if h.chunk_id in sources]
        if not found:
            await run.emit(
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
        started = await run.emit(
            StepStarted(step_id=step_id, title=f"Write: {s.title}", agent="writer"),
            f"{step_id}:started",
        )
        saved = await run.checkpoint(f"section:{step_id}")
        if saved is not None:
            section = msgspec.convert(saved, Section)
        else:
            try:
                section = await _compose(run, s, found, numbers, sources, used, started)
            except ProviderError as exc:
                await run.emit(
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
            await run.save(f"section:{step_id}", msgspec.to_builtins(section))
        used.update(c.text for c in section.claims)
        if section.claims:
            for sid in [c.source_id for cl in section.claims for c in cl.citations]:
                display.setdefault(sid, len(display) + 1)
            for part in citations.render_section_parts(s.title, section.claims, display):
                await report.add(part, section.section_id)
            out.append(section)
        else:  # dropped, not padded with passages that merely share its words
            missing.append(not_found(s))
        await run.emit(
            StepCompleted(
                step_id=step_id,
                summary=f"{len(section.claims)} cited claims"
                if section.claims
                else "nothing found that answers it beyond the earlier sections",
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
    run: RunContext,
    s: planner.SubQuestion,
    found: list[corpus.Hit],
    numbers: dict[str, int],
    sources: dict[str, Source],
    used: set[str],
    started: Event,
) -> Section:
    step_id = s.write_step
    provider = run.svc.provider
    request = write_request(run.state.question or "", s, found, numbers, used)
    meter = run.svc.meter
    usage_id = run.eid(f"{step_id}:provider")
    res = await meter.reserve(
        run_id=run.run_id,
        tenant_id=run.tenant_id,
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
        metrics.RATE_LIMITS.labels(provider.name).inc()
        at = now() + timedelta(seconds=wait_s)
        await run.emit(
            RateLimited(
                provider=provider.name,
                retry_at=at,
                retry_after_s=wait_s,
                attempt=attempt,
                step_id=step_id,
            ),
            f"{step_id}:rate_limited:{limits}",
            cause=started,
        )

    tick = time.monotonic()
    progress = 0
    # A provider call is a CLIENT span named by the GenAI conventions (`chat {model}`).
    with work_span(
        f"chat {provider.model}",
        kind=SpanKind.CLIENT,
        attributes={
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": provider.name,
            "gen_ai.request.model": provider.model,
        },
    ) as span:
        try:
            # The key's shared limits first: a run over them waits visibly (rate_limited).
            await provider_limits.acquire(
                run.svc.pool,
                provider_limits.key_of(provider.name, getattr(provider, "api_key", "")),
                provider_limits.ProviderLimits(
                    run.svc.options.provider_rpm, run.svc.options.provider_tpm
                ),
                provider.prompt_tokens(request) + request.max_output_tokens,
                rate_limited,
            )
            async for _ in provider.stream(request, result, rate_limited):
                if time.monotonic() - tick >= 1.0:
                    tick = time.monotonic()
                    progress += 1
                    await run.emit(
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
        span.set_attribute("gen_ai.usage.input_tokens", result.usage.input_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", result.usage.output_tokens)
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


def write_request(
    question: str,
    s: planner.SubQuestion,
    found: list[corpus.Hit],
    numbers: dict[str, int],
    used: set[str],
) -> WriteRequest:
    """What the provider is asked for one section: the sub-question and its numbered passages."""
    return WriteRequest(
        question=question,
        section_title=s.title,
        sub_question=s.question,
        focus=s.focus,
        avoid=sorted(used),
        passages=[
            Passage(
                number=numbers[h.chunk_id],
                source_id=h.chunk_id,
                title=h.title,
                # As stored, lines and all: the sentence splitter tells prose from grammar and
                # code by its lines (the source's flattened text would hide them).
                text=h.text,
            )
            for h in found
        ],
    )


def not_found(s: planner.SubQuestion) -> str:
    """The report's note for a sub-question no passage answered."""
    return (
        f"Section '{s.title}' left out: no passage found answers \"{s.question}\""
        " (beyond what the sections above say)."
    )


def title(run: RunContext) -> str:
    st = run.state
    return (
        st.title
        or (st.options.get("title") if st.options else None)
        or ((st.question or "Report").strip().rstrip("?").strip()[:120])
    )


def content(
    run: RunContext,
    subs: list[planner.SubQuestion],
    sections: list[Section],
    missing: list[str],
    plan_ev: Event,
) -> ContentModel:
    _, sources = numbered(run)
    cited: dict[str, None] = {}
    for sec in sections:
        for claim in sec.claims:
            for c in claim.citations:
                cited.setdefault(c.source_id, None)
    return ContentModel(
        run_id=run.run_id,
        title=title(run),
        question=run.state.question or "",
        sections=sections,
        sources=[sources[sid] for sid in cited],
        summary=" ".join(sec.claims[0].text for sec in sections if sec.claims)[:1000] or None,
        partial=bool(missing),
        missing=list(missing),
        generated_at=plan_ev.time,
    )


class ReportStream:
    """The report stream: coalesced message.delta events, at most one per `interval`.

    A replica taking over knows what was streamed already (`report_text`); the report is
    rebuilt deterministically from checkpoints, so only what lies beyond is emitted.
    """

    def __init__(self, run: RunContext, interval: float) -> None:
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
