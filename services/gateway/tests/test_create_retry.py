"""POST /v1/runs that fails after its first write: the client is told to retry (503 with
Retry-After), the read model shows the run, and a retry with the same Idempotency-Key completes
it (the gateway app in process, on the real servers, with one write made to fail)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec
import nats.errors
import pytest
from runloom.contracts import subjects
from runloom.devkit.gateway import in_process
from runloom.gateway.store.tenants import create_tenant
from runloom.runtime import bus
from runloom.runtime.eventlog import EventLog


class _FailingPool:
    """The gateway's pool, whose first `INSERT INTO runs(` fails as a lost connection would."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool
        self.failed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)

    def _fail_once(self, sql: str) -> None:
        if sql.startswith("INSERT INTO runs(") and not self.failed:
            self.failed = True
            raise ConnectionResetError("injected: connection lost before the runs row")

    async def execute(self, sql: str, *args: Any) -> Any:
        self._fail_once(sql)
        return await self._pool.execute(sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> Any:
        self._fail_once(sql)
        return await self._pool.fetchrow(sql, *args)


@contextlib.asynccontextmanager
async def _gateway(settings: Any, pool: Any) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    key = await create_tenant(pool, f"t-{uuid.uuid4().hex[:10]}", "retry")
    async with in_process(settings, key) as gateway:
        yield gateway


async def _started(nc: Any, run_id: str, post: Any) -> httpx.Response:
    """Run `post()` and wait for the start command it sends for `run_id`."""
    seen = asyncio.get_running_loop().create_future()

    async def on_msg(msg: Any) -> None:
        if msgspec.json.decode(msg.data).get("run_id") == run_id and not seen.done():
            seen.set_result(True)

    sub = await nc.subscribe(subjects.START_RUN, cb=on_msg)
    try:
        answer = await post()
        await asyncio.wait_for(seen, 10)
        return answer  # type: ignore[no-any-return]
    finally:
        await sub.unsubscribe()


def _fail_once(failure: str, state: Any, monkeypatch: Any) -> None:
    """Make the next runs row or start command fail, as a lost server would."""
    if failure == "runs row":
        state.pool = _FailingPool(state.pool)
        return
    real = bus.publish
    calls = {"n": 0}

    async def publish(js_: Any, subject: str, *args: Any, **kwargs: Any) -> Any:
        if subject == subjects.START_RUN and calls["n"] == 0:
            calls["n"] += 1
            raise nats.errors.TimeoutError  # injected: no answer from NATS
        return await real(js_, subject, *args, **kwargs)

    monkeypatch.setattr(bus, "publish", publish)


@pytest.mark.parametrize("failure", ["runs row", "start command"])
async def test_a_retry_with_the_same_key_completes_a_half_created_run(
    failure: str, settings: Any, pool: Any, nc: Any, js: Any, poll: Any, monkeypatch: Any
) -> None:
    async with asyncio.timeout(60), _gateway(settings, pool) as (client, state):
        _fail_once(failure, state, monkeypatch)
        body = {"question": "What survives a crash halfway?"}
        headers = {"Idempotency-Key": f"key-{failure.replace(' ', '-')}"}
        first = await client.post("/v1/runs", json=body, headers=headers)
        assert first.status_code == 503, first.text
        assert first.headers["content-type"].startswith("application/problem+json")
        assert int(first.headers["retry-after"]) >= 1

        async def listed() -> bool:
            items = (await client.get("/v1/runs")).json()["items"]
            return len(items) == 1 and items[0]["status"] == "created"

        await poll(listed)  # the read model shows the run the failed request stored
        run_id = (await client.get("/v1/runs")).json()["items"][0]["id"]

        retry = await _started(
            nc, run_id, lambda: client.post("/v1/runs", json=body, headers=headers)
        )
        assert retry.status_code == 200, retry.text
        assert retry.json()["id"] == run_id
        events = await EventLog(js, "test").events(run_id)
        assert [e.type for e in events] == ["run.created"]
        assert (await client.get("/v1/runs")).json()["items"][0]["id"] == run_id


@pytest.mark.parametrize("failure", ["runs row", "start command"])
async def test_a_half_created_run_without_a_key_ends_failed_and_the_answer_names_it(
    failure: str, settings: Any, pool: Any, js: Any, poll: Any, monkeypatch: Any
) -> None:
    """No Idempotency-Key: no retry can finish the run, so it is ended as failed (not left
    "created" for good, and not run beside the client's retry), and the 503 says which run
    and what to do."""
    async with asyncio.timeout(60), _gateway(settings, pool) as (client, state):
        _fail_once(failure, state, monkeypatch)
        body = {"question": "What if the start is lost?"}
        first = await client.post("/v1/runs", json=body)
        assert first.status_code == 503, first.text
        assert first.headers["content-type"].startswith("application/problem+json")
        assert int(first.headers["retry-after"]) >= 1
        problem = first.json()
        run_id = problem["run_id"]
        assert run_id in problem["detail"] and "Idempotency-Key" in problem["detail"]

        events = await EventLog(js, "test").events(run_id)
        assert [e.type for e in events] == ["run.created", "run.failed"]
        assert "Idempotency-Key" in events[-1].data["error"]

        async def failed() -> bool:
            run = await client.get(f"/v1/runs/{run_id}")
            return run.status_code == 200 and run.json()["status"] == "failed"

        await poll(failed)  # the read model shows it ended, with the reason
        assert "Idempotency-Key" in (await client.get(f"/v1/runs/{run_id}")).json()["error"]

        spec = (await client.get("/openapi.json")).json()  # a generated client knows it
        assert "503" in spec["paths"]["/v1/runs"]["post"]["responses"]

        again = await client.post("/v1/runs", json=body)  # what the client does next
        assert again.status_code == 201, again.text
        assert again.json()["id"] != run_id
