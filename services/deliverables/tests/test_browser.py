"""The website and the HTML deck in a real headless Chromium, opened from file:// with no
server and no network: links, styles, keyboard navigation and speaker notes work."""

from __future__ import annotations

import asyncio
import io
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from runloom.deliverables.render import render
from runloom.deliverables.sample import sample_content

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture
async def page() -> AsyncIterator[Any]:
    if not await asyncio.to_thread(CHROMIUM.exists):
        pytest.fail("Chromium is missing: `apt-get install -y chromium` (make test does it)")
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=str(CHROMIUM), args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        try:
            context = await browser.new_context(viewport={"width": 1280, "height": 720})
            tab = await context.new_page()
            errors: list[str] = []
            tab.on("pageerror", lambda exc: errors.append(str(exc)))
            tab.on("requestfailed", lambda req: errors.append(f"failed: {req.url}"))
            # Offline: any request leaving file:// fails the test.
            await context.route(
                lambda url: not url.startswith("file://"), lambda route: route.abort()
            )
            yield tab
            assert not errors, errors
        finally:
            await browser.close()


async def test_website_browses_offline_from_file_urls(page: Any, tmp_path: Path) -> None:
    content = sample_content(sections=3, sources=6)
    with zipfile.ZipFile(io.BytesIO(render(content, "website", "zip"))) as zf:
        zf.extractall(tmp_path)
    await page.goto((tmp_path / "index.html").as_uri())
    assert await page.locator("h1").inner_text() == content.title
    # The stylesheet beside the pages applies.
    assert "system-ui" in await page.evaluate("getComputedStyle(document.body).fontFamily")

    await page.get_by_role("link", name=content.sections[1].title).first.click()
    await page.wait_for_url("**/section-02-*.html")
    assert await page.locator("main h1").inner_text() == content.sections[1].title

    cite = page.locator("sup.cite a").first
    number = (await cite.inner_text()).strip("[]")
    await cite.click()
    await page.wait_for_url(f"**/sources.html#src-{number}")
    target = page.locator(f"#src-{number}")
    assert await target.is_visible()
    assert content.sources[int(number) - 1].title in await target.inner_text()

    await page.get_by_role("link", name=content.title).click()
    await page.wait_for_url("**/index.html")


async def test_deck_moves_with_the_keyboard_and_shows_notes(page: Any, tmp_path: Path) -> None:
    content = sample_content(sections=2, sources=4)
    deck = tmp_path / "deck.html"
    deck.write_bytes(render(content, "slides", "html"))
    await page.goto(deck.as_uri())
    visible = page.locator(".slide.active")
    assert await visible.locator("h1").inner_text() == content.title
    total = await page.locator(".slide").count()

    await page.keyboard.press("ArrowRight")
    assert (await visible.locator("h2").inner_text()).startswith(content.sections[0].title)
    assert page.url.endswith("#2")
    notes = visible.locator("aside.notes")
    assert not await notes.is_visible()
    await page.keyboard.press("n")
    assert await notes.is_visible()
    passage = content.sections[0].claims[0].citations[0].passage
    assert passage in await notes.inner_text()

    await page.keyboard.press("End")
    assert (await visible.locator("h2").inner_text()).startswith("Sources")
    assert page.url.endswith(f"#{total}")
    await page.keyboard.press("Home")
    assert await visible.locator("h1").inner_text() == content.title

    # A reload keeps the slide (the hash), as a presenter expects.
    await page.goto(deck.as_uri() + "#3")
    assert await page.locator(".slide.active").get_attribute("id") == "slide-3"
