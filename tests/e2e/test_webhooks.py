"""Webhooks end to end: the gateway's API, the webhooks service as its own process, real runs.

A receiver that fails its first deliveries gets every subscribed event of every run, each
verified by the `standardwebhooks` library, in seq order per run, each webhook-id once after
dedup, although the delivery service is SIGKILLed while deliveries wait for their retry.
Hostile URLs are refused with a problem saying why.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from typing import Any

import httpx
import pytest
from runloom.contracts.webhooks import WEBHOOK_EVENT_TYPES
from runloom.devkit.receiver import WebhookReceiver, in_order_once, verified
from runloom.devkit.runs import json_events

SERVICES = ("gateway", "orchestrator", "billing", "webhooks")
FAST = {
    "RUNLOOM_WEBHOOKS_ALLOW_LOCAL": "true",
    "RUNLOOM_WEBHOOKS_RETRY_FIRST_S": "1",
    "RUNLOOM_WEBHOOKS_RETRY_MAX_S": "2",
}
QUESTION = "How do Python decorators work?"


async def _ended(c: httpx.AsyncClient, run_id: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not (await c.get(f"/v1/runs/{run_id}")).json()["ended_by"]:
        assert time.monotonic() < deadline, f"run {run_id} did not end in {timeout}s"
        await asyncio.sleep(0.25)


async def _waiting_for_retry(c: httpx.AsyncClient, hook: str, timeout: float = 30) -> None:
    """Until a delivery has failed at least once and waits for its next attempt."""
    deadline = time.monotonic() + timeout
    while True:
        r = await c.get(f"/v1/webhooks/{hook}/deliveries", params={"status": "pending"})
        assert r.status_code == 200, r.text
        if any(d["attempts"] >= 1 and d["next_attempt_at"] for d in r.json()["deliveries"]):
            return
        assert time.monotonic() < deadline, r.json()
        await asyncio.sleep(0.1)


@pytest.mark.platform_services(*SERVICES)
@pytest.mark.platform_env(**FAST)
async def test_every_event_of_every_run_arrives_verified_in_order_across_a_sigkill(
    platform, corpus
) -> None:
    failing = True
    receiver = WebhookReceiver(answer=lambda n: 503 if failing else 204)
    run_receiver = WebhookReceiver()
    async with (
        receiver,
        run_receiver,
        httpx.AsyncClient(base_url=platform.url, headers=platform.headers(), timeout=20) as c,
    ):
        r = await c.post(
            "/v1/webhooks",
            json={"url": receiver.url, "events": list(WEBHOOK_EVENT_TYPES), "description": "e2e"},
        )
        assert r.status_code == 201, r.text
        hook = r.json()
        assert hook["secret"].startswith("whsec_") and hook["status"] == "enabled"

        runs = []
        for i in range(3):
            body: dict[str, Any] = {"question": QUESTION, "options": {"deliverables": []}}
            if i == 0:
                body["webhook"] = run_receiver.url
            r = await c.post("/v1/runs", json=body)
            assert r.status_code == 201, r.text
            runs.append(r.json())
        run_hook = runs[0]["webhook"]
        assert run_hook["secret"].startswith("whsec_")

        # Deliveries fail and wait for their retry: kill the delivery service now.
        await _waiting_for_retry(c, hook["id"])
        platform["webhooks-1"].kill()
        for run in runs:
            await _ended(c, run["id"])
        platform["webhooks-1"].start()
        failing = False

        expected: dict[str, list[int]] = {}
        ids: set[str] = set()
        for run in runs:
            events = await json_events(c, platform.url, run["id"], platform.headers())
            mine = [e for e in events if e["type"] in WEBHOOK_EVENT_TYPES]
            expected[run["id"]] = [e["seq"] for e in mine]
            ids |= {e["id"] for e in mine}
        await receiver.wait_for(lambda r: r.ids() >= ids, timeout=60)
        assert receiver.ids() == ids
        assert in_order_once(receiver, verified(receiver, [hook["secret"]])) == expected
        assert any(r.status == 503 for r in receiver.requests)

        first = runs[0]["id"]
        await run_receiver.wait_for(lambda r: len(r.ids()) == len(expected[first]), timeout=30)
        got = in_order_once(run_receiver, verified(run_receiver, [run_hook["secret"]]))
        assert got == {first: expected[first]}  # only its own run's events

        # The receiver sees a request a moment before the service records its answer.
        deadline = time.monotonic() + 20
        while True:
            r = await c.get(f"/v1/webhooks/{hook['id']}/deliveries", params={"limit": 500})
            deliveries = r.json()["deliveries"]
            if all(d["status"] == "delivered" for d in deliveries):
                break
            assert time.monotonic() < deadline, deliveries
            await asyncio.sleep(0.1)
        assert len(deliveries) == len(ids)
        assert max(d["attempts"] for d in deliveries) >= 2
        listed = (await c.get("/v1/webhooks")).json()["webhooks"]
        assert {w["id"] for w in listed} == {hook["id"], run_hook["id"]}
        assert all("secret" not in w for w in listed)

        metrics = (await c.get(f"{platform.management['webhooks-1']}/metrics")).text
        assert 'runloom_webhook_attempts_total{outcome="delivered"}' in metrics
        # The gauge covers every tenant (the session's other tests too): it is there, a number.
        assert re.search(r"^runloom_webhook_oldest_pending_age_seconds \d", metrics, re.M)


@pytest.mark.platform_services("gateway", "webhooks")
@pytest.mark.platform_env(RUNLOOM_WEBHOOKS_ALLOW_LOCAL="true")
async def test_hostile_urls_are_refused_with_a_problem_saying_why(platform) -> None:
    async with httpx.AsyncClient(
        base_url=platform.url, headers=platform.headers(), timeout=20
    ) as c:
        for url, reason, words in (
            ("http://169.254.169.254/latest/meta-data/", "forbidden_address", "link-local"),
            ("https://10.0.0.1/hook", "forbidden_address", "private"),
            ("https://[fd00::1]/hook", "forbidden_address", "private"),
            ("https://100.64.0.1/hook", "forbidden_address", "shared"),
            ("https://[::ffff:192.168.0.1]/hook", "forbidden_address", "private"),
            ("ftp://example.com/hook", "invalid_url", "https"),
            ("https://user:pw@127.0.0.1/hook", "invalid_url", "password"),
        ):
            r = await c.post("/v1/webhooks", json={"url": url, "events": ["run.completed"]})
            assert r.status_code == 422, (url, r.text)
            assert r.headers["content-type"].startswith("application/problem+json")
            problem = r.json()
            assert problem["reason"] == reason and words in problem["detail"], (url, problem)
            r = await c.post("/v1/runs", json={"question": QUESTION, "webhook": url})
            assert r.status_code == 422 and r.json()["reason"] == reason, (url, r.text)

        r = await c.post("/v1/webhooks", json={"url": "https://a.example", "events": ["x.y"]})
        assert r.status_code == 422 and "events" in r.json()["detail"]
        r = await c.post("/v1/webhooks", json={"url": "https://a.example", "events": []})
        assert r.status_code == 422 and "events" in r.json()["detail"]
        assert (await c.get("/v1/webhooks")).json() == {"webhooks": []}
        assert (await c.get("/v1/runs")).json()["items"] == []  # nothing was stored
        r = await c.delete("/v1/webhooks/whk_01JD6Q0W7XKZ3T9M4N5P6R8S2V")
        assert r.status_code == 404 and r.headers["content-type"].startswith(
            "application/problem+json"
        )


@pytest.mark.platform_services("gateway", "webhooks")
@pytest.mark.platform_env(RUNLOOM_WEBHOOKS_ALLOW_LOCAL="true")
async def test_the_cli_lists_endpoints_and_deliveries(platform) -> None:
    where = ("--url", platform.url, "--key", platform.api_key)

    def cli(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "runloom.cli.main", "webhooks", *args, *where],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    assert "No webhooks yet" in await asyncio.to_thread(cli, "list")
    added = await asyncio.to_thread(
        cli, "add", "http://127.0.0.1:9/hook", "--events", "run.completed,run.failed"
    )
    hook_id = added.split()[1]
    assert hook_id.startswith("whk_") and "secret  whsec_" in added
    listed = await asyncio.to_thread(cli, "list")
    assert hook_id in listed and "run.completed,run.failed" in listed and "enabled" in listed
    assert "No deliveries yet" in await asyncio.to_thread(cli, "deliveries", hook_id)
    rotated = await asyncio.to_thread(cli, "rotate", hook_id)
    assert "whsec_" in rotated and "previous secret still signs until" in rotated
    assert f"webhook {hook_id} is enabled" in await asyncio.to_thread(cli, "enable", hook_id)
    assert f"deleted webhook {hook_id}" in await asyncio.to_thread(cli, "delete", hook_id)
