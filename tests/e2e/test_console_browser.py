"""The web console in a real headless Chromium against the running platform.

Screenshots land in test-artifacts/console/ (git-ignored) for a person to look at.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_PATH = Path(CHROMIUM)
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "console"
QUESTION = "How do Python generators and the yield statement work?"
VAGUE = "Can you help me with something?"
TERMINAL = {"run.completed", "run.failed", "run.cancelled", "run.budget_stopped"}


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    if not await asyncio.to_thread(CHROMIUM_PATH.exists):
        pytest.fail("Chromium is missing: `apt-get install -y chromium` (make test does it)")
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            await b.close()


@pytest.fixture
async def page(browser: Any, platform: Any) -> AsyncIterator[Any]:
    """A laptop-sized tab, signed in (the key in session storage, as the sign-in form does)."""
    context = await browser.new_context(viewport={"width": 1366, "height": 860})
    await context.add_init_script(
        f"sessionStorage.setItem('runloom.api_key', {platform.api_key!r})"
    )
    tab = await context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    tab.errors = errors
    try:
        yield tab
    finally:
        await context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


async def api(platform: Any, method: str, path: str, **kw: Any) -> Any:
    async with httpx.AsyncClient(base_url=platform.url, headers=platform.headers()) as c:
        r = await c.request(method, path, **kw)
        r.raise_for_status()
        return r.json() if r.content else None


async def history(platform: Any, run_id: str) -> list[dict[str, Any]]:
    page = await api(
        platform, "GET", f"/v1/runs/{run_id}/events", params={"format": "json", "limit": 5000}
    )
    return [item["event"] for item in page["events"]]


async def until(what: str, cond: Callable[[], Awaitable[bool]], timeout: float = 45.0) -> None:
    deadline = time.monotonic() + timeout
    while not await cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.1)


async def rows(tab: Any) -> list[tuple[int, str]]:
    """The timeline as shown: (seq, type) per row."""
    cells = await tab.eval_on_selector_all(
        "[data-testid=timeline] tbody tr",
        "trs => trs.map(tr => [Number(tr.dataset.seq), tr.querySelector('code').textContent])",
    )
    return [(int(s), t) for s, t in cells]


async def shown_steps(tab: Any) -> list[tuple[str, str]]:
    return [
        (s, st)
        for s, st in await tab.eval_on_selector_all(
            "li.step", "els => els.map(e => [e.dataset.step, e.dataset.status])"
        )
    ]


async def shown_sources(tab: Any) -> list[str]:
    return list(
        await tab.eval_on_selector_all(
            ".source .source-title", "els => els.map(e => e.textContent)"
        )
    )


async def status(tab: Any) -> str:
    return str(await tab.text_content("[data-testid=run-status]"))


async def ended(tab: Any, label: str, timeout: float = 60.0) -> None:
    """Wait for the run's status badge to read `label` (a partial run adds " · partial")."""
    await tab.wait_for_selector(
        f"[data-testid=run-status]:text-matches('^{label}( · partial)?$')", timeout=timeout * 1000
    )


async def shot(tab: Any, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    await tab.screenshot(path=str(path), full_page=True)
    return path


def same_as_history(shown: list[tuple[int, str]], events: list[dict[str, Any]]) -> None:
    assert shown == [(e["seq"], e["type"]) for e in events]
    assert [s for s, _ in shown] == list(range(1, len(events) + 1))  # no dup, no gap


async def open_run(tab: Any, platform: Any, run_id: str) -> None:
    await tab.goto(f"{platform.url}/#/runs/{run_id}")
    await tab.wait_for_selector("[data-testid=timeline] tbody tr")


# -- the happy path, from the form ---------------------------------------------------------------


async def test_sign_in_start_a_run_from_the_form_and_watch_it_complete(
    browser: Any, platform: Any, corpus: str, tmp_path: Path
) -> None:
    context = await browser.new_context(viewport={"width": 1366, "height": 860})
    tab = await context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    await tab.goto(platform.url + "/")
    # A wrong key is refused with the place to find the right one.
    await tab.fill("#api-key", "rlk_not-a-key")
    await tab.keyboard.press("Enter")
    await tab.wait_for_selector("text=.runloom/api-key")
    await tab.fill("#api-key", platform.api_key)
    await tab.keyboard.press("Enter")
    await tab.wait_for_selector("[data-testid=runs]")
    await tab.click("text=New run")
    await tab.fill("#question", QUESTION)
    await tab.fill("#budget", "5")
    await tab.uncheck("#dl-website")
    await tab.uncheck("#dl-slides")
    await shot(tab, "new-run")
    t0 = time.monotonic()
    await tab.click("button[type=submit]")
    await tab.wait_for_url(re.compile(r"#/runs/run_"))
    run_id = tab.url.rsplit("/", 1)[-1]
    await tab.wait_for_selector("[data-testid=timeline] tbody tr")
    first_row = time.monotonic() - t0
    await ended(tab, "Completed")
    print(
        f"\nconsole: submit -> first timeline row {first_row * 1000:.0f} ms,"
        f" -> completed {time.monotonic() - t0:.2f} s"
    )
    await tab.wait_for_selector("[data-kind=report][data-status=ready] button.artifact")
    events = await history(platform, run_id)
    same_as_history(await rows(tab), events)
    plan = next(e for e in events if e["type"] == "plan.proposed")["data"]["steps"]
    assert await shown_steps(tab) == [(s["step_id"], "done") for s in plan]
    assert await tab.locator("[data-parallel-group]").count() >= 1  # the sub-agents' lane
    content = next(e for e in events if e["type"] == "content.stored")["data"]["content"]
    # Sources numbered as the report numbers them, then the ones it did not cite.
    found = {
        e["data"]["source_id"]: e["data"]["title"] for e in events if e["type"] == "source.found"
    }
    reported = [s["source_id"] for s in content["sources"]]
    order = reported + [sid for sid in found if sid not in reported]
    titles = {**found, **{s["source_id"]: s["title"] for s in content["sources"]}}
    assert await shown_sources(tab) == [f"[{i}] {titles[sid]}" for i, sid in enumerate(order, 1)]
    for section in content["sections"]:
        await tab.wait_for_selector(f"[data-testid=report] h3:text-is({section['title']!r})")
    cited = {
        c["source_id"] for s in content["sections"] for cl in s["claims"] for c in cl["citations"]
    }
    for source_id in cited:  # each cited source lists the claims that cite it
        assert await tab.locator(f"#source-{source_id} [data-claim]").count() >= 1
    spent = sum(e["data"].get("cost_usd", 0) for e in events if e["type"] == "usage.recorded")
    assert "Spent $" in (await tab.text_content("[data-testid=spend]") or "") and spent > 0
    await shot(tab, "completed")
    # A deliverable downloads with the key (fetch + blob), under its own name.
    async with tab.expect_download() as dl:
        await tab.click("[data-kind=report] button.artifact >> text=.md")
    download = await dl.value
    saved = tmp_path / download.suggested_filename
    await download.save_as(saved)
    assert saved.suffix == ".md" and content["sections"][0]["title"] in saved.read_text()
    # The run list shows it.
    await tab.click("text=Runs")
    await tab.wait_for_selector(f"[data-run={run_id}] >> text=Completed")
    await shot(tab, "runs")
    await context.close()
    assert not errors, errors


# -- rebuild from history, reconnect -------------------------------------------------------------


@pytest.mark.platform_env(RUNLOOM_OFFLINE_TOKEN_DELAY_S="0.01")
async def test_reload_mid_run_shows_the_same_plan_sources_and_timeline(
    page: Any, platform: Any, corpus: str
) -> None:
    run = await api(
        platform, "POST", "/v1/runs", json={"question": QUESTION, "options": {"deliverables": []}}
    )
    await open_run(page, platform, run["id"])

    async def streaming() -> bool:
        return any(t == "message.delta" for _, t in await rows(page))

    await until("the report streaming", streaming)
    before = (await rows(page), await shown_steps(page), await shown_sources(page))
    await page.reload()
    await page.wait_for_selector("[data-testid=timeline] tbody tr")

    async def caught_up() -> bool:
        return len(await rows(page)) >= len(before[0])

    await until("the reloaded page to catch up", caught_up)
    after = (await rows(page), await shown_steps(page), await shown_sources(page))
    assert after[0][: len(before[0])] == before[0]
    assert [s for s, _ in after[1]] == [s for s, _ in before[1]]  # same plan
    assert after[2][: len(before[2])] == before[2]  # same sources, same numbers
    await ended(page, "Completed")
    same_as_history(await rows(page), await history(platform, run["id"]))


@pytest.mark.platform_env(RUNLOOM_OFFLINE_TOKEN_DELAY_S="0.01")
async def test_gateway_restart_mid_run_reconnects_with_no_duplicate_or_missing_row(
    page: Any, platform: Any, corpus: str
) -> None:
    run = await api(
        platform, "POST", "/v1/runs", json={"question": QUESTION, "options": {"deliverables": []}}
    )
    await open_run(page, platform, run["id"])
    await page.wait_for_selector("[data-testid=connection][data-state=live]")

    async def streaming() -> bool:
        return any(t == "message.delta" for _, t in await rows(page))

    await until("the report streaming", streaming)
    gateway = platform["gateway-1"]
    gateway.kill()
    await page.wait_for_selector("[data-testid=connection][data-state=reconnecting]")
    assert "reconnecting" in (await page.text_content("[data-testid=connection]") or "")
    await shot(page, "reconnecting")
    gateway.start()
    await asyncio.to_thread(platform.wait_ready, gateway)
    ready = time.monotonic()
    await page.wait_for_selector(
        "[data-testid=connection][data-state=caught_up], [data-testid=connection][data-state=ended]"
    )
    print(f"\nconsole: gateway ready -> caught up {(time.monotonic() - ready) * 1000:.0f} ms")
    await ended(page, "Completed")
    events = await history(platform, run["id"])
    assert events[-1]["type"] == "run.completed"
    same_as_history(await rows(page), events)


# -- the user's hand on the run ------------------------------------------------------------------


async def test_answer_a_clarification_in_the_form(page: Any, platform: Any, corpus: str) -> None:
    run = await api(
        platform, "POST", "/v1/runs", json={"question": VAGUE, "options": {"deliverables": []}}
    )
    await open_run(page, platform, run["id"])
    form = page.locator("[data-testid=clarification]")
    await form.wait_for()
    assert await status(page) == "Waiting for your answer"
    assert await page.evaluate("document.activeElement.id") == "clarification-answer"
    await shot(page, "clarification")
    await page.keyboard.type("generators and the yield statement")
    await page.keyboard.press("Tab")
    await page.keyboard.press("Enter")  # the keyboard alone answers it
    await ended(page, "Completed")
    events = await history(platform, run["id"])
    answered = next(e for e in events if e["type"] == "clarification.answered")
    assert answered["data"]["answer"] == "generators and the yield statement"
    assert await form.count() == 0
    same_as_history(await rows(page), events)


@pytest.mark.platform_env(RUNLOOM_OFFLINE_TOKEN_DELAY_S="0.01")
async def test_cancel_from_the_page(page: Any, platform: Any, corpus: str) -> None:
    run = await api(
        platform, "POST", "/v1/runs", json={"question": QUESTION, "options": {"deliverables": []}}
    )
    await open_run(page, platform, run["id"])
    await page.wait_for_selector("li.step[data-status=running]")
    await page.click("[data-testid=cancel]")
    await page.wait_for_selector("[data-testid=cancelled]")
    assert await status(page) == "Cancelled"
    assert await page.locator("[data-testid=cancel]").count() == 0
    events = await history(platform, run["id"])
    assert events[-1]["type"] == "run.cancelled" and "cancel.requested" in [
        e["type"] for e in events
    ]
    same_as_history(await rows(page), events)
    await shot(page, "cancelled")


async def test_cancel_a_run_paused_for_a_clarification(
    page: Any, platform: Any, corpus: str
) -> None:
    run = await api(
        platform, "POST", "/v1/runs", json={"question": VAGUE, "options": {"deliverables": []}}
    )
    await open_run(page, platform, run["id"])
    await page.locator("[data-testid=clarification]").wait_for()
    await page.click("[data-testid=cancel]")
    await page.wait_for_selector("[data-testid=cancelled]", timeout=15_000)
    assert await page.locator("[data-testid=clarification]").count() == 0
    events = await history(platform, run["id"])
    assert events[-1]["type"] == "run.cancelled"
    same_as_history(await rows(page), events)


async def test_budget_stop_shows_what_was_spent_and_kept(
    page: Any, platform: Any, corpus: str
) -> None:
    await page.goto(f"{platform.url}/#/new")
    await page.fill("#question", QUESTION)
    await page.fill("#budget", "0.0005")
    await page.uncheck("#dl-website")
    await page.uncheck("#dl-slides")
    await page.click("button[type=submit]")
    try:
        await page.wait_for_url(re.compile(r"#/runs/run_"))
    except Exception:
        await shot(page, "budget-form-error")
        raise
    run_id = page.url.rsplit("/", 1)[-1]
    banner = page.locator("[data-testid=budget-stopped]")
    await banner.wait_for(timeout=60_000)
    events = await history(platform, run_id)
    stop = events[-1]
    assert stop["type"] == "run.budget_stopped"
    text = await banner.text_content() or ""
    assert "budget is used up" in text
    assert f"${stop['data']['budget_usd']:.4f}" in text
    kept = await page.locator("[data-testid=kept] li").all_text_contents()
    assert kept == (stop["data"].get("kept") or ["nothing had been produced yet"])
    assert await status(page) == "Stopped: budget used up"
    same_as_history(await rows(page), events)
    await shot(page, "budget-stopped")


# -- failure states the services rarely show on demand, written straight to the event log ------


@pytest.mark.platform_services("gateway")
async def test_failure_states_are_shown_in_words(
    page: Any, platform: Any, platform_tenant: str, js: Any
) -> None:
    """Rate limit countdown, billing wait, deliverable retries and final failure, partial data."""
    from runloom.contracts import events as ev
    from runloom.runtime.eventlog import EventLog

    run = await api(
        platform, "POST", "/v1/runs", json={"question": QUESTION, "options": {"deliverables": []}}
    )
    run_id = run["id"]
    log = EventLog(js, "orchestrator/test")

    async def put(payload: Any) -> None:
        await log.append(run_id, platform_tenant, payload)

    await put(ev.RunStarted(worker="orchestrator-test"))
    await put(
        ev.PlanProposed(
            steps=[
                ev.PlanStep(step_id="a", title="Generators", parallel_group=1),
                ev.PlanStep(step_id="b", title="Yield", parallel_group=1),
            ]
        )
    )
    await put(ev.StepStarted(step_id="a", agent="agent-1"))
    retry_at = (datetime.now(UTC) + timedelta(seconds=30)).isoformat().replace("+00:00", "Z")
    await put(ev.RateLimited(provider="openai", retry_at=retry_at, retry_after_s=30, step_id="a"))
    await open_run(page, platform, run_id)
    banner = page.locator("[data-testid=rate-limited]")
    await banner.wait_for()
    first = await banner.text_content() or ""
    assert re.search(r"retries automatically in (2\d|30) s", first), first

    async def ticked() -> bool:
        return await banner.text_content() != first

    await until("the countdown to tick", ticked, timeout=5)
    await shot(page, "rate-limited")
    await put(ev.BillingWaiting(message="billing does not answer", since=retry_at))
    await page.locator("[data-testid=billing-waiting]").wait_for()
    await put(ev.BillingResumed(waited_s=2))
    await put(ev.StepCompleted(step_id="a", source_count=0))
    await page.locator("[data-testid=rate-limited]").wait_for(state="detached")
    await page.locator("[data-testid=billing-waiting]").wait_for(state="detached")
    await put(ev.StepFailed(step_id="b", error="no passage matched", reason="no_results"))
    await put(ev.DeliverableRequested(kind="slides", job_id="j1", content_hash="h"))
    await put(
        ev.DeliverableFailed(
            kind="slides",
            job_id="j1",
            error="renderer crashed",
            attempt=1,
            max_attempts=3,
            will_retry=True,
            retry_at=retry_at,
        )
    )
    slides = page.locator("[data-kind=slides]")
    await page.wait_for_selector("[data-kind=slides] >> text=Attempt 1 of 3 failed")
    await put(ev.DeliverableProgress(kind="slides", job_id="j1", message="rendering", attempt=3))
    await put(
        ev.DeliverableFailed(
            kind="slides",
            job_id="j1",
            error="renderer crashed again",
            attempt=3,
            max_attempts=3,
            will_retry=False,
        )
    )
    await page.wait_for_selector("[data-kind=slides] >> text=Failed for good after 3 attempts")
    assert "renderer crashed again" in (await slides.text_content() or "")
    await put(
        ev.RunCompleted(
            partial=True, missing=["Yield: no passage matched", "slides: renderer crashed again"]
        )
    )
    partial = page.locator("[data-testid=partial]")
    await partial.wait_for()
    assert await partial.locator("li").all_text_contents() == [
        "Yield: no passage matched",
        "slides: renderer crashed again",
    ]
    assert await shown_steps(page) == [("a", "done"), ("b", "failed")]
    same_as_history(await rows(page), await history(platform, run_id))
    await shot(page, "partial")


@pytest.mark.platform_services("gateway")
async def test_a_queued_run_shows_its_place_and_why_then_starts(
    page: Any, platform: Any, platform_tenant: str, js: Any
) -> None:
    from runloom.contracts import events as ev
    from runloom.runtime.eventlog import EventLog

    run = await api(
        platform, "POST", "/v1/runs", json={"question": QUESTION, "options": {"deliverables": []}}
    )
    run_id = run["id"]
    log = EventLog(js, "orchestrator/test")
    await log.append(
        run_id,
        platform_tenant,
        ev.RunQueued(position=3, reason="platform_busy", running=8, limit=8),
    )
    await open_run(page, platform, run_id)
    banner = page.locator("[data-testid=queued]")
    await banner.wait_for()
    assert (await status(page)) == "Queued"
    text = await banner.text_content() or ""
    assert "Queued (position 3)" in text and "the platform is busy" in text, text
    assert "8 of 8 running" in text
    await shot(page, "queued")
    await log.append(
        run_id,
        platform_tenant,
        ev.RunQueued(position=1, reason="platform_busy", running=8, limit=8),
    )
    await page.wait_for_selector("[data-testid=queued] >> text=Queued (position 1)")
    await log.append(run_id, platform_tenant, ev.RunStarted(worker="orchestrator-test"))
    await banner.wait_for(state="detached")
    assert (await status(page)) == "Running"
    same_as_history(await rows(page), await history(platform, run_id))


# -- webhooks ------------------------------------------------------------------------------------


@pytest.mark.platform_services("gateway", "webhooks")
@pytest.mark.platform_env(RUNLOOM_WEBHOOKS_ALLOW_LOCAL="true")
async def test_the_webhooks_page_lists_endpoints_and_their_deliveries(
    page: Any, platform: Any
) -> None:
    from runloom.devkit.receiver import WebhookReceiver

    async with WebhookReceiver(fail_first=1) as receiver:
        hook = await api(
            platform,
            "POST",
            "/v1/webhooks",
            json={"url": receiver.url, "events": ["run.created"], "description": "console"},
        )
        # No orchestrator runs: the run stays created, and run.created is delivered all the same.
        run = await api(platform, "POST", "/v1/runs", json={"question": QUESTION})
        await receiver.wait_for(lambda r: len(r.ids()) == 1, timeout=30)
        await page.goto(f"{platform.url}/#/webhooks")
        row = page.locator(f"[data-webhook='{hook['id']}']")
        await row.wait_for()
        assert "enabled" in await row.inner_text()
        await row.get_by_role("button", name=receiver.url).click()
        delivery = page.locator("[data-testid=deliveries] tbody tr")
        await delivery.first.wait_for()
        text = await delivery.first.inner_text()
        assert "run.created" in text and f"{run['id']} · 1" in text and "delivered" in text
        assert re.search(r"\b2\b", text), text  # two attempts: the receiver failed the first
        await shot(page, "webhooks")
