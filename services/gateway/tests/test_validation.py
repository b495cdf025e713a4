"""Hostile input at every route of a real gateway: a problem+json saying what to change, no 5xx,
nothing stored, and the archive keeps up."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import pytest
from runloom.gateway.store import archive
from runloom.gateway.store.tenants import create_tenant

pytestmark = pytest.mark.platform_services("gateway", "billing")  # budgets are billing's

RUN = "run_01JD6Q0W7XKZ3T9M4N5P6R8S2V"
DEEP = b'{"question":"q","options":' + b'{"x":' * 300 + b"1" + b"}" * 301


def _cursor(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _stream_cursor(body: str) -> str:
    return "c1" + base64.urlsafe_b64encode(body.encode()).decode().rstrip("=")


CASES: list[tuple[str, str, dict[str, Any], int, str]] = [
    # (method, path, request kwargs, status, words in detail)
    ("POST", "/v1/runs", {"json": {"question": "a\u0000b"}}, 422, "NUL character"),
    ("POST", "/v1/runs", {"json": {"question": "q", "options": {"k": "\u0000"}}}, 422, "NUL"),
    ("POST", "/v1/runs", {"json": {"question": "q", "options": {"\u0000": 1}}}, 422, "a key of"),
    ("POST", "/v1/runs", {"content": b'{"question": "a\\ud800"}'}, 422, "valid string"),
    ("POST", "/v1/runs", {"json": {"question": "q", "budget_usd": 1e300}}, 422, "budget_usd"),
    ("POST", "/v1/runs", {"content": b'{"question":"q","budget_usd":1e999}'}, 422, "budget_usd"),
    ("POST", "/v1/runs", {"content": b'{"question":"q","budget_usd":Infinity}'}, 422, "budget"),
    ("POST", "/v1/runs", {"content": b'{"question":"q","budget_usd":NaN}'}, 422, "budget_usd"),
    (
        "POST",
        "/v1/runs",
        {"json": {"question": "q", "options": {"a": "x" * 70_000}}},
        422,
        "bytes of JSON",
    ),
    ("POST", "/v1/runs", {"content": DEEP}, 422, "nests deeper than 16 levels"),
    ("POST", "/v1/runs", {"content": b"x" * 300_000}, 413, "at most 256 KB"),
    (
        "POST",
        "/v1/runs",
        {"json": {"question": "q"}, "headers": {"Idempotency-Key": "a b"}},
        422,
        "idempotency",
    ),
    ("GET", "/v1/runs/run_*", {}, 422, "run_id"),
    ("GET", "/v1/runs/%00", {}, 422, "run_id"),
    ("GET", "/v1/runs/run.x", {}, 422, "run_id"),
    ("POST", "/v1/runs/run_*/clarification", {"json": {"answer": "a"}}, 422, "run_id"),
    ("POST", f"/v1/runs/{RUN}/clarification", {"json": {"answer": "a"}}, 404, "No run"),
    ("POST", f"/v1/runs/{RUN}/clarification", {"json": {"answer": "\u0000"}}, 422, "NUL"),
    ("POST", f"/v1/runs/{RUN}/cancel", {"json": {"reason": "\u0000"}}, 422, "NUL"),
    ("GET", f"/v1/runs/{RUN}/deliverables", {}, 404, "No run"),
    ("GET", "/v1/runs/run_*/deliverables", {}, 422, "run_id"),
    (
        "GET",
        "/v1/runs",
        {"params": {"cursor": _cursor("9999-12-31T23:59:59-14:00|" + RUN)}},
        400,
        "cursor",
    ),
    (
        "GET",
        "/v1/runs",
        {"params": {"cursor": _cursor("0001-01-01T00:00:00+14:00|" + RUN)}},
        400,
        "cursor",
    ),
    (
        "GET",
        "/v1/runs",
        {"params": {"cursor": _cursor("2026-01-01T00:00:00+00:00|\u0000")}},
        400,
        "cursor",
    ),
    (
        "GET",
        "/v1/runs",
        {"params": {"cursor": _cursor("2026-01-01T00:00:00|" + RUN)}},
        400,
        "cursor",
    ),
    ("GET", "/v1/runs", {"params": {"limit": "0"}}, 422, "limit"),
    ("GET", "/v1/documents", {"params": {"offset": str(2**63)}}, 422, "offset"),
    ("GET", "/v1/documents", {"params": {"offset": "-1"}}, 422, "offset"),
    ("DELETE", "/v1/documents/doc_%00", {}, 422, "document_id"),
    ("GET", "/v1/artifacts/%2A", {}, 422, "artifact_id"),
    ("GET", "/v1/usage", {"params": {"run_id": "run_*"}}, 422, "run_id"),
    ("GET", "/v1/usage", {"params": {"from": "9999-12-31", "to": "9999-12-31"}}, 422, "before"),
    ("GET", "/v1/usage", {"params": {"from": "0001-01-01T00:00:00+14:00"}}, 422, "'from'"),
    ("GET", "/v1/usage", {"params": {"to": "9999-12-31T23:59:59-14:00"}}, 422, "'to'"),
    ("GET", "/v1/usage", {"params": {"from": "2026-13-01"}}, 422, "'from'"),
    ("GET", "/v1/usage", {"params": {"group_by": "\u0000"}}, 422, "group_by"),
    ("PUT", "/v1/budget", {"json": {"amount_usd": 1e300}}, 422, "amount_usd"),
    ("PUT", "/v1/budget", {"content": b'{"amount_usd": Infinity}'}, 422, "amount_usd"),
    ("POST", "/v1/documents", {"json": {"title": "t\u0000", "text": "x"}}, 422, "NUL"),
    ("POST", "/v1/documents", {"json": {"title": "t", "text": "x", "url": "u\u0000"}}, 422, "NUL"),
    (
        "POST",
        "/v1/documents",
        {
            "content": b"--b1\r\n[[], 3.9e+152]--b1--\r\n",
            "headers": {"Content-Type": "multipart/form-data; boundary=b1"},
        },
        422,
        "could not be read",
    ),
    (
        "POST",
        "/v1/documents",
        {"content": b"--x--\r\n", "headers": {"Content-Type": "multipart/form-data"}},
        422,
        "boundary",
    ),
    (
        "POST",
        "/v1/documents",
        {"files": [("file", (f"n{i}.txt", b"notes")) for i in range(21)]},
        413,
        "at most 20 files",
    ),
    ("GET", "/console/%00", {}, 404, "no file"),
    ("DELETE", "/v1/runs", {}, 405, "not allowed"),
]


def _stream_cases(run: str) -> list[tuple[dict[str, Any], str]]:
    RUN = run
    return [
        ({"last_event_id": _stream_cursor(f"abc:{RUN}:1:{2**64}")}, "malformed"),
        ({"last_event_id": _stream_cursor(f"abc:{RUN}:{2**70}:1")}, "malformed"),
        ({"last_event_id": _stream_cursor(f"a\u0000:{RUN}:1:1")}, "malformed"),
        ({"last_event_id": _stream_cursor(f"abc:{RUN}:5:99999999")}, "future"),
        ({"format": "json", "after": _stream_cursor(f"abc:{RUN}:-1:1")}, "malformed"),
    ]


@pytest.mark.platform_services("gateway", "billing", "orchestrator")  # it lists the corpus too
async def test_hostile_values_answer_a_problem_saying_what_to_change(platform) -> None:
    async with httpx.AsyncClient(base_url=platform.url, headers=platform.headers()) as c:
        for method, path, kwargs, status, words in CASES:
            kwargs = dict(kwargs)
            headers = {**kwargs.pop("headers", {})}
            if "content" in kwargs:
                headers.setdefault("Content-Type", "application/json")
            r = await c.request(method, path, headers=headers, **kwargs)
            where = f"{method} {path} {kwargs}"[:200]
            assert r.status_code == status, f"{where}: {r.status_code} {r.text[:300]}"
            assert r.headers["content-type"].startswith("application/problem+json"), where
            assert words.lower() in r.json()["detail"].lower(), f"{where}: {r.json()['detail']}"
        # Nothing of the above was stored.
        assert (await c.get("/v1/runs")).json()["items"] == []
        assert (await c.get("/v1/documents")).json()["total"] == 0
        assert (await c.get("/v1/budget")).json()["amount_usd"] is None

        run = (await c.post("/v1/runs", json={"question": "cursors"})).json()
        for params, words in _stream_cases(run["id"]):
            r = await c.get(f"/v1/runs/{run['id']}/events", params=params)
            assert r.status_code == 400, f"{params}: {r.status_code} {r.text[:300]}"
            assert words in r.json()["detail"], r.json()["detail"]
        assert (await c.get("/readyz")).status_code == 200


async def test_405_names_the_allowed_methods(platform) -> None:
    async with httpx.AsyncClient(base_url=platform.url, headers=platform.headers()) as c:
        r = await c.put("/v1/runs")
        assert r.status_code == 405
        assert r.headers["allow"] == "GET, POST"
        assert "use GET, POST" in r.json()["detail"]


async def test_clarification_checks_the_tenant_before_reading_any_event(platform, pool) -> None:
    other = await create_tenant(pool, "other-tenant-" + platform.api_key[-6:], "other")
    async with httpx.AsyncClient(base_url=platform.url, headers=platform.headers()) as c:
        run = (await c.post("/v1/runs", json={"question": "whose run is this"})).json()
    async with httpx.AsyncClient(
        base_url=platform.url, headers={"Authorization": f"Bearer {other}"}
    ) as c:
        r = await c.post(f"/v1/runs/{run['id']}/clarification", json={"answer": "mine"})
        assert r.status_code == 404, r.text
        r = await c.post("/v1/runs/run_%2A/clarification", json={"answer": "mine"})
        assert r.status_code == 422 and "run_id" in r.json()["detail"]


async def test_metrics_need_an_api_key(platform, js) -> None:
    async with httpx.AsyncClient(base_url=platform.url) as c:
        r = await c.get("/metrics/streaming")
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        r = await c.get("/metrics/streaming", headers=platform.headers())
        assert r.status_code == 200 and "archive_lag_events" in r.json()
    info = await js.consumer_info("RUN_EVENTS", archive.DURABLE)
    assert info is not None


async def test_the_cli_says_what_a_run_id_looks_like(platform) -> None:
    import asyncio
    import sys
    from pathlib import Path

    runloom = Path(sys.executable).parent / "runloom"
    proc = await asyncio.create_subprocess_exec(
        str(runloom),
        "cancel",
        "--url",
        platform.url,
        "--key",
        platform.api_key,
        "run_*",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    text = (out + err).decode()
    assert proc.returncode != 0, text
    assert "run_id" in text and "e.g. 'run_01JD6Q0W7XKZ3T9M4N5P6R8S2V'" in text, text
    assert "Traceback" not in text
