"""The use cases called directly, as the HTTP routes and the AG-UI adapter call them: the same
answers without HTTP (the gateway app in process, on the real servers)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from runloom.gateway import usecases
from runloom.gateway.app import create_app
from runloom.gateway.auth import Principal
from runloom.gateway.problems import Problem
from runloom.gateway.store.tenants import create_tenant
from runloom.gateway.usecases import RunIn


async def test_create_replay_cancel_and_answer_without_http(settings: Any, pool: Any) -> None:
    app = create_app(settings)
    tenant = f"t-{uuid.uuid4().hex[:10]}"
    await create_tenant(pool, tenant, "use cases")
    who = Principal(tenant)
    async with asyncio.timeout(60), app.router.lifespan_context(app):
        state = app.state.runloom
        body = RunIn(question="What do the use cases share?")
        first = await usecases.create_run(state, who, body, "uc-key")
        again = await usecases.create_run(state, who, body, "uc-key")
        assert (first.replay, again.replay) == (False, True)
        assert again.run_id == first.run_id
        assert usecases.run_view(first.row)["status"] == "created"

        with pytest.raises(Problem) as not_waiting:  # it has asked nothing
            await usecases.answer_clarification(state, who, first.run_id, "an answer")
        assert not_waiting.value.status == 409

        cancel = await usecases.cancel_run(state, who, first.run_id, "changed my mind")
        assert cancel.type == "cancel.requested" and cancel.seq == 2

        page = await usecases.page_events(state, who, first.run_id, None, 10)
        assert [e["event"]["type"] for e in page["events"]][:2] == [
            "run.created",
            "cancel.requested",
        ]

        with pytest.raises(Problem) as other_tenant:  # never 403: 404
            await usecases.load_run(state, Principal("someone-else"), first.run_id)
        assert other_tenant.value.status == 404
