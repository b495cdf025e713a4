"""Test helpers: drive runs as the gateway does (append run.created, publish StartRun)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from runloom.contracts import subjects
from runloom.contracts.commands import ResumeRun, StartRun
from runloom.contracts.events import (
    TERMINAL_TYPES,
    CancelRequested,
    ClarificationAnswered,
    Event,
    RunCreated,
)
from runloom.contracts.ids import new_id
from runloom.runtime import bus
from runloom.runtime.eventlog import EventLog


class Driver:
    def __init__(self, js: Any, pool: Any, tenant_id: str) -> None:
        self.js = js
        self.pool = pool
        self.tenant_id = tenant_id
        self.log = EventLog(js, "gateway/test")

    async def create(self, question: str, **options: Any) -> str:
        run_id = new_id("run")
        await self.log.append(
            run_id, self.tenant_id, RunCreated(question=question, options=options)
        )
        return run_id

    async def start(self, run_id: str, msg_id: str | None = None) -> None:
        await bus.publish(
            self.js,
            subjects.START_RUN,
            StartRun(command_id=new_id("cmd"), run_id=run_id, tenant_id=self.tenant_id),
            msg_id=msg_id or f"start-{run_id}",
        )

    async def run(self, question: str, **options: Any) -> str:
        run_id = await self.create(question, **options)
        await self.start(run_id)
        return run_id

    async def cancel(self, run_id: str) -> Event:
        return await self.log.append(run_id, self.tenant_id, CancelRequested(reason="test"))

    async def answer(self, run_id: str, answer: str) -> None:
        ev = await self.log.append(run_id, self.tenant_id, ClarificationAnswered(answer=answer))
        await bus.publish(
            self.js,
            subjects.RESUME_RUN,
            ResumeRun(
                command_id=new_id("cmd"),
                run_id=run_id,
                tenant_id=self.tenant_id,
                reason="clarification_answered",
                causation_id=ev.id,
            ),
            msg_id=f"resume-{ev.id}",
        )

    async def events(self, run_id: str) -> list[Event]:
        return await self.log.events(run_id)

    async def wait_for(self, run_id: str, types: set[str], timeout: float = 30.0) -> list[Event]:
        """Poll the log until an event of one of `types` is stored; returns all events."""
        deadline = time.monotonic() + timeout
        while True:
            events = await self.events(run_id)
            if any(e.type in types for e in events):
                return events
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no {sorted(types)} within {timeout} s; got {[e.type for e in events]}"
                )
            await asyncio.sleep(0.05)

    async def finished(self, run_id: str, timeout: float = 30.0) -> list[Event]:
        return await self.wait_for(run_id, set(TERMINAL_TYPES), timeout)
