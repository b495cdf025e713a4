"""Property: whatever text, numbers and JSON a client throws at any route, the platform
answers without a 5xx, stays ready, its archive catches up, and every run it created ends with
exactly one terminal event (hypothesis, bounded in examples and time)."""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from runloom.contracts.events import TERMINAL_TYPES
from runloom.devkit.testing import wait_ended

EXAMPLES = 60
TIME_BUDGET_S = 45.0

text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40
) | st.sampled_from(["", " ", "\x00", "run_*", ">", "a.b", "%00", "9" * 30, "Infinity", "\u202e"])
numbers = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0, -1, 2**63, 2**64, 1e300, 1e-300]),
)
json_values = st.recursive(
    st.none() | st.booleans() | numbers | text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
)
ids = st.one_of(
    text.filter(lambda s: "/" not in s and "?" not in s and "#" not in s and s not in (".", "..")),
    st.just("run_01JD6Q0W7XKZ3T9M4N5P6R8S2V"),
    st.just("$run"),
)
run_bodies = st.fixed_dictionaries(
    {"question": text | st.just("What is JetStream?")},
    optional={
        "budget_usd": numbers | st.none(),
        "options": st.dictionaries(text, json_values, max_size=3),
        "skill": text,
    },
)
requests = st.one_of(
    st.tuples(st.just("POST"), st.just("/v1/runs"), run_bodies | json_values, st.none()),
    st.tuples(
        st.sampled_from(["GET", "POST", "PUT", "DELETE"]),
        st.sampled_from(
            [
                "/v1/runs/{id}",
                "/v1/runs/{id}/cancel",
                "/v1/runs/{id}/clarification",
                "/v1/runs/{id}/stream-token",
                "/v1/runs/{id}/deliverables",
                "/v1/documents/{id}",
                "/v1/artifacts/{id}",
                "/v1/agui/runs/{id}",
            ]
        ),
        json_values,
        ids,
    ),
    st.tuples(
        st.sampled_from(["GET", "PUT", "POST"]),
        st.sampled_from(["/v1/runs", "/v1/documents", "/v1/usage", "/v1/budget", "/v1/agui"]),
        json_values,
        st.none(),
    ),
    st.tuples(
        st.just("GET"),
        st.sampled_from(["/v1/runs", "/v1/documents", "/v1/usage", "/v1/runs/$run/events"]),
        st.dictionaries(
            st.sampled_from(
                ["limit", "offset", "cursor", "from", "to", "group_by", "run_id", "after", "format"]
            ),
            text | numbers.map(str),
            max_size=3,
        ),
        st.none(),
    ),
)


@pytest.mark.timeout(300)
async def test_no_input_breaks_the_platform(platform: Any) -> None:
    created: list[str] = []
    seen: dict[int, int] = {}
    base = platform.url
    headers = platform.headers()
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as c:
        anchor = (await c.post("/v1/runs", json={"question": "A run the fuzzer aims at"})).json()
        created.append(anchor["id"])
    started = time.monotonic()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(requests)
    def hostile(req: tuple[str, str, Any, str | None]) -> None:
        if time.monotonic() - started > TIME_BUDGET_S:
            return
        method, path, payload, ident = req
        if path.startswith("/v1/agui/runs/") and ident == "$run":
            ident = "run_01JD6Q0W7XKZ3T9M4N5P6R8S2V"  # a real run's stream lasts until it ends
        # A client puts any text in a path segment percent-encoded (httpx refuses raw controls).
        segment = quote((ident or "x").replace("$run", anchor["id"]), safe="")
        path = path.replace("{id}", segment)
        path = path.replace("$run", anchor["id"])
        if path.endswith("/events") and isinstance(payload, dict):
            payload = {**payload, "format": "json"}  # pages, not a stream that lasts the run
        c = sync_client
        if method == "GET" and isinstance(payload, dict):
            r = c.get(path, params=payload, headers={"Accept": "application/json"})
        elif method in ("GET", "DELETE"):
            r = c.request(method, path)
        else:
            r = c.request(method, path, json=payload)
        seen[r.status_code] = seen.get(r.status_code, 0) + 1
        assert r.status_code < 500, f"{method} {path} {payload!r:.300}: {r.text[:300]}"
        if r.status_code != 204 and r.content:
            assert r.headers["content-type"].split(";")[0] in (
                "application/json",
                "application/problem+json",
                "text/event-stream",
                "text/html",
            ), r.headers["content-type"]
        if method == "POST" and path == "/v1/runs" and r.status_code in (200, 201):
            created.append(r.json()["id"])

    with httpx.Client(base_url=base, headers=headers, timeout=30) as sync_client:
        await asyncio.to_thread(hostile)
    print(f"status codes seen: {dict(sorted(seen.items()))}; runs created: {len(created)}")

    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as c:
        assert (await c.get("/readyz")).status_code == 200
        for run_id in created:  # end them quickly: a cancelled run still ends exactly once
            await c.post(f"/v1/runs/{run_id}/cancel", json={"reason": "fuzzing is over"})
        for run_id in created:
            await wait_ended(c, run_id, timeout=120)
            page = (await c.get(f"/v1/runs/{run_id}/events", params={"format": "json"})).json()
            kinds = [e["event"]["type"] for e in page["events"]]
            terminal = [k for k in kinds if k in TERMINAL_TYPES]
            assert len(terminal) == 1 and kinds[-1] == terminal[0], (run_id, kinds)
        deadline = time.monotonic() + 30
        while True:
            lag = (await c.get("/metrics/streaming")).json()["archive_lag_events"]
            if lag == 0:
                break
            assert time.monotonic() < deadline, f"archive lag stays at {lag}"
            await asyncio.sleep(0.2)
        listed = {
            r["id"]: r for r in (await c.get("/v1/runs", params={"limit": 100})).json()["items"]
        }
        for run_id in created:  # the read model shows each run's true status
            assert listed[run_id]["ended_by"] is not None, listed[run_id]
