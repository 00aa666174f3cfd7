"""The review page under authentication, in a real browser (Debian's chromium through
Playwright): it asks for a key, shows only the key's tenant, and renders hostile item text as
text. Skips without chromium or Playwright as tests/server/test_review_page.py does (and fails
instead with INTEREST_TREE_REQUIRE_BROWSER=1)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from interesttree.v1 import catalog_pb2, interest_pb2

from .test_api import START
from .test_auth import Secured, bearer, load_tenant, secured_settings, start_secured
from .test_review_page import CHROMIUM, CHROMIUM_FLAGS, _browser_or_skip

HOSTILE = '<img src=x onerror="alert(document.domain)"><script>alert(1)</script>'


@pytest.fixture
async def hostile(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Secured]:
    running = await start_secured(secured_settings(tmp_path_factory.mktemp("page") / "data"))
    try:
        writer = bearer(running.keys["acme:writer"])
        await load_tenant(running.stubs, running.keys["acme:writer"])
        item = catalog_pb2.Item(
            name="items/hostile", title=HOSTILE, categories=["Books", "Science fiction"]
        )
        await running.stubs.catalog.UpsertItems(
            catalog_pb2.UpsertItemsRequest(items=[item]), metadata=writer
        )
        events = interest_pb2.RecordEventsRequest()
        for day in range(3):
            event = events.events.add(
                user="users/alice", item="items/hostile", type=interest_pb2.EVENT_TYPE_PURCHASE
            )
            event.event_time.FromDatetime(START + timedelta(days=300 + day))
        await running.stubs.interests.RecordEvents(events, metadata=writer)
        await running.stubs.interests.BuildInterestTree(
            interest_pb2.BuildInterestTreeRequest(user="users/alice"), metadata=writer
        )
        yield running
    finally:
        await running.stop()


async def _open(api: Any, served: Secured, key: str) -> tuple[Any, list[str], list[str], Any]:
    playwright = await api.async_playwright().start()
    browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
    page = await browser.new_page()
    dialogs: list[str] = []
    problems: list[str] = []

    async def answer(dialog: Any) -> None:
        dialogs.append(f"{dialog.type}: {dialog.message}")
        if dialog.type == "prompt":
            await dialog.accept(key)
        else:
            await dialog.dismiss()

    page.on("dialog", answer)
    page.on("pageerror", lambda error: problems.append(str(error)))
    await page.goto(f"{served.base_url}/?user=alice")

    async def close() -> None:
        await browser.close()
        await playwright.stop()

    return page, dialogs, problems, close


async def test_the_page_asks_for_a_key_and_renders_hostile_text_as_text(
    hostile: Secured,
) -> None:
    api = _browser_or_skip()
    page, dialogs, problems, close = await _open(api, hostile, hostile.keys["acme:reader"])
    try:
        await page.wait_for_selector("body[data-loaded='alice']", timeout=30_000)
        assert [d.split(":")[0] for d in dialogs] == ["prompt"]  # asked once, no alert ran
        evidence = await page.locator("#tree .evidence li").all_inner_texts()
        assert HOSTILE in evidence
        # Shown as text: no element the title describes exists in the document.
        assert await page.locator("#tree img, #review img").count() == 0
        assert await page.locator("#review script").count() == 0
        assert problems == []
    finally:
        await close()


async def test_the_page_shows_nothing_of_another_tenant(hostile: Secured) -> None:
    api = _browser_or_skip()
    page, dialogs, _, close = await _open(api, hostile, hostile.keys["rival:reader"])
    try:
        await api.expect(page.locator("#status")).to_contain_text("no user")
        assert await page.locator("#review").is_hidden()
        assert dialogs[0].startswith("prompt")
    finally:
        await close()


async def test_a_wrong_key_is_refused_in_the_page(hostile: Secured) -> None:
    api = _browser_or_skip()
    page, _, _, close = await _open(api, hostile, "itk_not-a-key")
    try:
        await api.expect(page.locator("#status")).to_contain_text("API key is not valid")
        assert await page.locator("#review").is_hidden()
    finally:
        await close()
