"""`POST /v1/runs/{id}/clarification`: answer a paused run's question; the run resumes.

The answer is an event on the run (`clarification.answered`, caused by the question it
answers); a `ResumeRun` command then wakes an orchestrator replica (both in
`usecases.answer_clarification`). Answering a run that is not waiting for one is a 409 that
says what the run is doing instead.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from runloom.gateway import usecases
from runloom.gateway._params import RunIdPath
from runloom.gateway.auth import Principal, principal
from runloom.gateway.problems import responses
from runloom.gateway.state import GatewayState, get_state
from runloom.gateway.usecases import ClarificationIn

router = APIRouter(prefix="/v1/runs", tags=["runs"])


@router.post("/{run_id}/clarification", status_code=202, responses=responses(404, 409))
async def answer_clarification(
    run_id: RunIdPath,
    body: ClarificationIn,
    state: GatewayState = Depends(get_state),
    who: Principal = Depends(principal),
) -> dict[str, Any]:
    """Answer the run's clarification question; the run continues with the answer."""
    answered = await usecases.answer_clarification(state, who, run_id, body.answer)
    return {"run_id": run_id, "status": "running", "event_id": answered.id, "seq": answered.seq}
