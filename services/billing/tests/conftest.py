"""Fixtures: a fresh tenant, a run (its run.created on the real bus), a real billing process."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from runloom.billing.accounts import Accounts
from runloom.billing.service import run_budget_from_events
from runloom.billing_client import load_prices
from runloom.contracts import subjects
from runloom.contracts.commands import ReleaseRequest
from runloom.contracts.events import RunCreated
from runloom.contracts.ids import new_id
from runloom.devkit import busauth
from runloom.devkit.embedded import free_port
from runloom.devkit.supervisor import ServiceProcess
from runloom.runtime.config import Settings
from runloom.runtime.eventlog import EventLog


@pytest.fixture
def tenant() -> str:
    """A fresh tenant id (billing keeps no tenant table: a tenant is an id on requests)."""
    return f"t-{uuid.uuid4().hex[:12]}"


MakeRun = Callable[..., Awaitable[str]]


@pytest.fixture
def make_run(js: Any) -> MakeRun:
    """Store a run's run.created with its budget (as the gateway does at POST /v1/runs)."""
    log = EventLog(js, "gateway")

    async def make(tenant_id: str, budget_usd: float | None = None) -> str:
        run_id = new_id("run")
        await log.append(run_id, tenant_id, RunCreated(question="q", budget_usd=budget_usd))
        return run_id

    return make


@pytest.fixture
def accounts(pool: Any, js: Any) -> Accounts:
    return Accounts(pool=pool, prices=load_prices(), run_budget=run_budget_from_events(js))


class Billing:
    """A real `python -m runloom.billing` process."""

    def __init__(
        self,
        settings: Settings,
        root: Path,
        env: dict[str, str] | None = None,
        replica: str = "1",
    ) -> None:
        self.proc = ServiceProcess(
            "billing",
            {
                "RUNLOOM_NATS_URL": settings.effective_nats_url,
                "RUNLOOM_NATS_CREDENTIALS": str(busauth.credential(settings.home, "billing")),
                "RUNLOOM_DATABASE_URL": settings.effective_database_url,
                "RUNLOOM_HOME": str(root),
                "RUNLOOM_LOG_FORMAT": "json",
                "RUNLOOM_MANAGEMENT_PORT": str(free_port()),
                **(env or {}),
            },
            root / "logs",
            replica=replica,
        )

    async def start(self, nc: Any, timeout: float = 30.0) -> None:
        self.proc.start()
        await self.wait_ready(nc, timeout)

    async def wait_ready(self, nc: Any, timeout: float = 30.0) -> None:
        """Poll with a harmless request until a billing replica answers."""
        probe = ReleaseRequest(reservation_id="probe", tenant_id="probe", run_id="probe")
        import msgspec

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.proc.running:
                raise RuntimeError(f"billing exited:\n{self.proc.log_tail()}")
            try:
                await nc.request(subjects.BILLING_RELEASE, msgspec.json.encode(probe), timeout=0.5)
                return
            except Exception:
                await asyncio.sleep(0.05)
        raise TimeoutError(f"billing not ready within {timeout}s\n{self.proc.log_tail()}")

    def kill(self) -> None:
        self.proc.kill()

    def stop(self) -> None:
        self.proc.stop(timeout=5)


@pytest.fixture
async def billing(settings: Settings, nc: Any, tmp_path: Path) -> AsyncIterator[Billing]:
    b = Billing(settings, tmp_path / "billing", {"RUNLOOM_BILLING_SWEEP_S": "0.5"})
    await b.start(nc)
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
async def more_billing(
    settings: Settings, nc: Any, tmp_path: Path
) -> AsyncIterator[Callable[[], Awaitable[Billing]]]:
    """Start more billing replicas (the same queue group); stopped after the test."""
    started: list[Billing] = []

    async def start() -> Billing:
        b = Billing(settings, tmp_path / "billing", replica=str(len(started) + 2))
        await b.start(nc)
        started.append(b)
        return b

    try:
        yield start
    finally:
        for b in started:
            b.stop()
