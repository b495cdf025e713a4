"""Fixtures: an in-process orchestrator replica on the session's real NATS and Postgres."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from runloom.devkit.runs import Driver
from runloom.orchestrator.config import OrchestratorOptions
from runloom.orchestrator.service import Orchestrator
from runloom.runtime.service import ServiceContext


@pytest.fixture(scope="session")
async def seeded_tenant(settings, _provisioned) -> str:
    """A tenant holding the default corpus (seeded once per session)."""
    from runloom.corpus.store import seed_default_corpus
    from runloom.runtime import db

    tenant = f"t-{uuid.uuid4().hex[:10]}"
    pool = await db.create_pool(settings.effective_database_url, max_size=2)
    try:
        await seed_default_corpus(pool, tenant)
    finally:
        await pool.close()
    return tenant


@pytest.fixture
def orch_options(request: pytest.FixtureRequest) -> OrchestratorOptions:
    marker = request.node.get_closest_marker("orch_options")
    base = OrchestratorOptions(delta_interval_s=0.01, sweep_interval_s=0.2)
    return dataclasses.replace(base, **(marker.kwargs if marker else {}))


@pytest.fixture
async def billing(settings, nc, js, pool) -> AsyncIterator[None]:
    """The real billing service, in process (every spend is reserved through it)."""
    from runloom.billing.service import main as billing_main

    stop = asyncio.Event()
    ctx = ServiceContext(name="billing", settings=settings, nc=nc, js=js, pool=pool, stop=stop)
    task = asyncio.create_task(billing_main(ctx))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


@contextlib.asynccontextmanager
async def running_orchestrator(
    settings, nc, js, pool, options: OrchestratorOptions
) -> AsyncIterator[Orchestrator]:
    """One replica in this process until the block ends."""
    stop = asyncio.Event()
    ctx = ServiceContext(name="orchestrator", settings=settings, nc=nc, js=js, pool=pool, stop=stop)
    orch = Orchestrator(ctx, options)
    task = asyncio.create_task(orch.run())
    try:
        yield orch
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


@pytest.fixture
async def orchestrator(
    settings, nc, js, pool, orch_options, billing
) -> AsyncIterator[Orchestrator]:
    async with running_orchestrator(settings, nc, js, pool, orch_options) as orch:
        yield orch


@pytest.fixture
def start_orchestrator(settings, nc, js, pool, orch_options, billing):
    """`async with start_orchestrator(provider="openai", ...)`: a replica with other settings."""

    def start(**overrides: Any):
        return running_orchestrator(
            dataclasses.replace(settings, **overrides), nc, js, pool, orch_options
        )

    return start


@pytest.fixture
async def driver(js, pool, seeded_tenant) -> Driver:
    return Driver(js, pool, seeded_tenant)


def pytest_configure(config: Any) -> None:
    config.addinivalue_line("markers", "orch_options(**kw): OrchestratorOptions overrides")


@pytest.fixture
async def orchestrator_without_billing(
    settings, nc, js, pool, orch_options
) -> AsyncIterator[Orchestrator]:
    """A replica with no billing service answering (metering waits, fail closed)."""
    async with running_orchestrator(settings, nc, js, pool, orch_options) as orch:
        yield orch
