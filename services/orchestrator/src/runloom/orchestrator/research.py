"""Research: one sub-agent per sub-question, in parallel, each a concurrent writer to the log.

A sub-agent searches the corpus by keywords and meaning together (`retrieval.search`; a precise
keyword query first, a wider one only if nothing was found),
each search metered and recorded as tool.called / tool.result, and keeps its passages as
sources (source id = chunk id; a passage another sub-agent already kept is not kept twice).
"""

from __future__ import annotations

import asyncio

import msgspec
from runloom.contracts.events import (
    Event,
    SourceFound,
    StepCompleted,
    StepFailed,
    StepProgress,
    StepStarted,
    ToolCalled,
    ToolResult,
    Usage,
)
from runloom.corpus import store as corpus
from runloom.corpus import text as textlib
from runloom.orchestrator import planner, retrieval
from runloom.orchestrator.phase import RunContext
from runloom.runtime.telemetry import work_span


async def research(
    run: RunContext, subs: list[planner.SubQuestion], plan_ev: Event
) -> dict[int, list[corpus.Hit]]:
    claimed = set(run.state.sources)
    """Sources already found (by this or another sub-agent): each is announced once."""
    results: dict[int, list[corpus.Hit]] = {}
    await retrieval.embed_all([s.meaning for s in subs])  # one batch; each search reuses its own
    async with asyncio.TaskGroup() as tg:
        for s in subs:
            tg.create_task(_traced_agent(run, s, plan_ev, results, claimed))
    return results


async def _traced_agent(
    run: RunContext,
    s: planner.SubQuestion,
    plan_ev: Event,
    results: dict[int, list[corpus.Hit]],
    claimed: set[str],
) -> None:
    """One sub-agent, as one span of the run's trace."""
    attributes = {"runloom.run_id": run.run_id, "runloom.step_id": s.research_step}
    with work_span("research sub-agent", attributes=attributes):
        await _agent(run, s, plan_ev, results, claimed)


async def _agent(
    run: RunContext,
    s: planner.SubQuestion,
    plan_ev: Event,
    results: dict[int, list[corpus.Hit]],
    claimed: set[str],
) -> None:
    step_id = s.research_step
    saved = await run.checkpoint(f"hits:{step_id}")
    step = run.state.step(step_id)
    if saved is not None and step is not None and step.status in ("done", "failed"):
        results[s.index] = [corpus.Hit(**h) for h in saved]
        return
    started = await run.emit(
        StepStarted(step_id=step_id, title=s.title, agent=f"researcher-{s.index}"),
        f"{step_id}:started",
        cause=plan_ev,
    )
    hits: list[corpus.Hit] = []
    result: Event | None = None
    used = s.queries[0]
    for attempt, query in enumerate(s.queries, start=1):
        hits, result = await _search(run, s, query, attempt, started)
        used = query
        if hits:
            break  # the more precise query found passages: no need to widen it
    assert result is not None
    await run.save(f"hits:{step_id}", [msgspec.to_builtins(h.__dict__) for h in hits])
    results[s.index] = hits
    for h in hits:
        if h.chunk_id in claimed:
            continue  # already found (by this or another sub-agent): never twice
        claimed.add(h.chunk_id)
        await run.emit(
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
        await run.emit(
            StepProgress(step_id=step_id, message=f"kept {len(hits)} passages", fraction=1.0),
            f"{step_id}:progress",
            cause=result,
        )
        await run.emit(
            StepCompleted(
                step_id=step_id,
                summary=f"{len(hits)} passages for '{used}'",
                source_count=len(hits),
            ),
            f"{step_id}:completed",
            cause=started,
        )
    else:
        await run.emit(
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
    run: RunContext,
    s: planner.SubQuestion,
    query: str,
    attempt: int,
    started: Event,
) -> tuple[list[corpus.Hit], Event]:
    """One metered corpus search of a sub-agent: tool.called, the search, tool.result."""
    step_id = s.research_step
    key = f"{step_id}:search" if attempt == 1 else f"{step_id}:search:{attempt}"
    call_id = run.eid(key)
    limit = run.svc.options.hits_per_step
    called = await run.emit(
        ToolCalled(
            call_id=call_id,
            tool="corpus_search",
            arguments={"query": query, "question": s.question, "limit": limit},
            step_id=step_id,
        ),
        f"{key}:called",
        cause=started,
    )
    meter = run.svc.meter
    res = await meter.reserve(
        run_id=run.run_id,
        tenant_id=run.tenant_id,
        kind="tool",
        estimated_usd=meter.estimate_tool("corpus_search"),
        reservation_id=call_id,
        tool="corpus_search",
        causation_id=called.id,
    )
    try:
        if run.svc.options.search_delay_s:
            await asyncio.sleep(run.svc.options.search_delay_s)
        # A replica taking over reuses what its predecessor's search returned.
        saved = await run.checkpoint(f"hits:{key}")
        if saved is not None:
            hits = [corpus.Hit(**h) for h in saved]
        else:
            hits = await retrieval.search(
                run.svc.pool, run.tenant_id, query, s.meaning, limit=limit, document_id=s.document
            )
            await run.save(f"hits:{key}", [msgspec.to_builtins(h.__dict__) for h in hits])
    except BaseException:
        await meter.release(res)
        raise
    await meter.commit(
        res, Usage(tool_calls=1), usage_id=call_id, step_id=step_id, causation_id=called.id
    )
    result = await run.emit(
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
