"""`POST /v1/runs/{id}/clarification`: answer a paused run's question; the run resumes.

The answer is an event on the run (`clarification.answered`, caused by the question it
answers); a `ResumeRun` command then wakes an orchestrator replica. Answering a run that is
not waiting for one is a 409 that says what the run is doing instead.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict
from runloom.contracts import subjects
from runloom.contracts.commands import ResumeRun
from runloom.contracts.events import ClarificationAnswered
from runloom.contracts.ids import new_id
from runloom.gateway._params import NonBlankText, RunIdPath, text
from runloom.gateway._telemetry import in_run_trace
from runloom.gateway.auth import Principal, principal
from runloom.gateway.problems import Problem, not_found, responses
from runloom.gateway.routes.runs import load_run
from runloom.gateway.state import GatewayState, get_state
from runloom.runtime import bus
from runloom.runtime.eventlog import RunClosed
from runloom.runtime.runstate import fold

router = APIRouter(prefix="/v1/runs", tags=["runs"])


class ClarificationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    answer: NonBlankText = text(5000, "The answer to the run's question.", nonblank=True)


def _conflict(run_id: str, detail: str, status: str) -> Problem:
    return Problem(
        409,
        "Not waiting for an answer",
        detail,
        type="https://runloom.dev/problems/not-waiting-for-clarification",
        run_id=run_id,
        run_status=status,
    )


@router.post("/{run_id}/clarification", status_code=202, responses=responses(404, 409))
async def answer_clarification(
    run_id: RunIdPath,
    body: ClarificationIn,
    state: GatewayState = Depends(get_state),
    who: Principal = Depends(principal),
) -> dict[str, Any]:
    """Answer the run's clarification question; the run continues with the answer."""
    await load_run(state, who, run_id)  # the id is valid and the run is this tenant's
    events = await state.log.events(run_id)
    if not events or events[0].tenant_id != who.tenant_id:
        raise not_found("run", run_id)
    run = fold(events)
    if run.terminal is not None:
        raise _conflict(
            run_id, f"The run already ended ({run.terminal.type}); start a new run.", run.status
        )
    if run.clarification is None:
        raise _conflict(
            run_id,
            f"The run is {run.status} and has not asked a question; there is nothing to answer.",
            run.status,
        )
    asked = [e for e in events if e.type == "clarification.requested"]
    # The answer and the resumed run belong to the run's trace (one per run).
    async with in_run_trace(state.log, run_id, "answer clarification", events[0]):
        try:
            answered = await state.log.append(
                run_id,
                who.tenant_id,
                ClarificationAnswered(answer=body.answer),
                event_id=f"{run_id}:answer:{len(asked)}",
                causation_id=asked[-1].id,
            )
        except RunClosed as exc:
            raise _conflict(
                run_id, f"The run ended ({exc.terminal.type}) before the answer arrived.", "ended"
            ) from exc
        if answered.data.get("answer") != body.answer:
            raise _conflict(
                run_id, "The question was already answered by another request.", "running"
            )
        await bus.publish(
            state.js,
            subjects.RESUME_RUN,
            ResumeRun(
                command_id=new_id("cmd"),
                run_id=run_id,
                tenant_id=who.tenant_id,
                reason="clarification_answered",
                causation_id=answered.id,
            ),
            msg_id=f"resume-{answered.id}",
        )
    return {"run_id": run_id, "status": "running", "event_id": answered.id, "seq": answered.seq}
