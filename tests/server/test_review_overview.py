"""The review page's overview: its JSON (/api/overview, /api/user-list, /api/items/{id}/users)
and the landing view in Debian's chromium (headless, through Playwright), as
tests/server/test_review_page.py drives the user view: counts, recently built users, users
paged and searched, and from an item to the users whose trees cite it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from interesttree.v1 import catalog_pb2, interest_pb2

from ..http_server import ServerWithHttp
from .test_auth import load_tenant, secured_settings, start_secured
from .test_review_page import CHROMIUM, CHROMIUM_FLAGS, _browser_or_skip, get_json

EXTRA_USERS = [f"reader-{n:02d}" for n in range(30)]


async def add_readers(served: ServerWithHttp) -> None:
    """30 more users with one event each (no tree), so that the user list has two pages."""
    events = interest_pb2.RecordEventsRequest()
    for n, user in enumerate(EXTRA_USERS):
        event = events.events.add(
            user=f"users/{user}", item="items/dracula", type=interest_pb2.EVENT_TYPE_VIEW
        )
        event.event_time.FromDatetime(datetime(2024, 5, 1, tzinfo=UTC) + timedelta(minutes=n))
    await served.running.stubs.interests.RecordEvents(events)


async def counts(served: ServerWithHttp) -> tuple[int, int, int]:
    stubs = served.running.stubs
    items = await stubs.catalog.ListItems(catalog_pb2.ListItemsRequest(page_size=1000))
    _, body = await get_json(served, "/api/user-list?limit=100")
    engine = served.running.runtime.engine
    return len(items.items), body["total"], engine.store.event_count()


async def cited_dracula(served: ServerWithHttp, user: str = "alice") -> list[str]:
    """The labels of the nodes of `user`'s latest tree whose evidence holds Dracula."""
    tree = (
        await served.running.stubs.interests.GetInterestTree(
            interest_pb2.GetInterestTreeRequest(name=f"users/{user}/interestTree")
        )
    ).tree
    return [node.label for node in tree.nodes if "items/dracula" in node.evidence_items]


def no_scans(monkeypatch: pytest.MonkeyPatch, served: ServerWithHttp) -> None:
    """Fails the test if the overview reads trees or user ids one by one or all at once."""
    store = served.running.runtime.engine.store

    def scan(*args: Any) -> Any:
        raise AssertionError("the overview scanned the store")

    for name in ("latest_tree", "latest_tree_json", "user_ids", "tree_revisions"):
        monkeypatch.setattr(store, name, scan)


async def test_overview_api(reviewed: ServerWithHttp, monkeypatch: pytest.MonkeyPatch) -> None:
    interests = reviewed.running.stubs.interests
    await interests.BuildInterestTree(interest_pb2.BuildInterestTreeRequest(user="users/bob"))
    alice_labels = await cited_dracula(reviewed)
    bob_labels = await cited_dracula(reviewed, "bob")
    assert alice_labels and bob_labels
    items, users, events = await counts(reviewed)
    no_scans(monkeypatch, reviewed)
    status, body = await get_json(reviewed, "/api/overview")
    assert status == 200
    assert (items, users) == (49, 3)
    assert body["counts"] == {"items": items, "users": users, "events": events}
    assert [(r["user_id"], r["revision"]) for r in body["recent"]] == [("bob", 1), ("alice", 2)]
    assert "partial" not in body

    status, page = await get_json(reviewed, "/api/user-list?search=A&offset=1&limit=1")
    assert status == 200
    assert page == {"users": ["carol"], "total": 2, "offset": 1, "next_offset": None}
    _, first = await get_json(reviewed, "/api/user-list?limit=2")
    assert (first["users"], first["next_offset"]) == (["alice", "bob"], 2)
    _, odd = await get_json(reviewed, "/api/user-list?offset=-5&limit=abc")
    assert (odd["offset"], odd["users"]) == (0, ["alice", "bob", "carol"])
    _, beyond = await get_json(reviewed, "/api/user-list?offset=99999999999999999999999")
    assert beyond == {"users": [], "total": 3, "offset": 3, "next_offset": None}

    status, citing = await get_json(reviewed, "/api/items/dracula/users")
    assert status == 200
    assert citing["item"] == {"item_id": "dracula", "title": "Dracula", "exists": True}
    # Both alice's and bob's trees cite it; carol has no tree.
    assert citing["users"] == [
        {"user_id": "alice", "revision": 2, "nodes": alice_labels},
        {"user_id": "bob", "revision": 1, "nodes": bob_labels},
    ]
    assert citing["more"] is False and "partial" not in citing
    _, unknown = await get_json(reviewed, "/api/items/nothing/users")
    assert unknown["item"]["exists"] is False and unknown["users"] == []
    status, bad = await get_json(reviewed, "/api/items/no%20such/users")
    assert status == 400 and "not a valid item id" in bad["error"]


async def test_overview_in_chromium(reviewed: ServerWithHttp) -> None:
    api = _browser_or_skip()
    await add_readers(reviewed)
    items, users, events = await counts(reviewed)
    assert users == 3 + len(EXTRA_USERS)
    labels = await cited_dracula(reviewed)
    assert labels

    async with api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            problems: list[str] = []
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda error: problems.append(str(error)))

            await page.goto(f"{reviewed.base_url}/")
            await page.wait_for_selector("body[data-loaded='overview']", timeout=30_000)
            assert await page.locator("#review").is_hidden()

            async def count(name: str) -> str:
                text: str = await page.locator(f"[data-count='{name}'] dd").inner_text()
                return text

            assert await count("items") == f"{items:,}"
            assert await count("users") == f"{users:,}"
            assert await count("events") == f"{events:,}"
            recent = await page.locator("#recent li").evaluate_all(
                "items => items.map(li => li.dataset.user)"
            )
            assert recent == ["alice"]

            # All users, 25 a page, in id order; then the second page.
            everyone = sorted(["alice", "bob", "carol", *EXTRA_USERS])
            listed = await page.locator("#user-list li").all_inner_texts()
            assert listed == everyone[:25]
            assert await page.locator("#users-page").inner_text() == f"1\u201325 of {users}"
            assert await page.locator("#users-prev").is_disabled()
            await page.click("#users-next")
            await page.wait_for_selector("body[data-user-page=':25']")
            assert await page.locator("#user-list li").all_inner_texts() == everyone[25:]
            assert await page.locator("#users-next").is_disabled()

            # Search narrows the list and starts at its first page.
            await page.fill("#user-search", "car")
            await page.wait_for_selector("body[data-user-page='car:0']")
            assert await page.locator("#user-list li").all_inner_texts() == ["carol"]
            assert await page.locator("#users-page").inner_text() == "1\u20131 of 1"

            # From a recently built user to their review, then from an evidence item to the
            # users whose trees cite it, and back.
            await page.click("#recent a[data-user='alice']")
            await page.wait_for_selector("body[data-loaded='alice']", timeout=30_000)
            assert await page.locator("#overview").is_hidden()
            await page.locator("#tree a.item-link[data-item='dracula']").first.click()
            await page.wait_for_selector("body[data-loaded='item:dracula']", timeout=30_000)
            assert "Dracula" in await page.locator("#item-heading").inner_text()
            citing = page.locator("#citing li")
            assert await citing.count() == 1
            text = await citing.first.inner_text()
            assert text.startswith("alice") and all(label in text for label in labels)
            assert await page.locator("#review").is_hidden()
            await page.click("#citing a[data-user='alice']")
            await page.wait_for_selector("body[data-loaded='alice']", timeout=30_000)

            # Recommended items link to their citing users too.
            links = page.locator("#recommendations a.item-link")
            assert await links.count() > 0
            assert problems == [], problems
        finally:
            await browser.close()


async def test_overview_routes_take_a_key_and_show_only_its_tenant(tmp_path: Path) -> None:
    secured = await start_secured(secured_settings(tmp_path / "data"))
    try:
        await load_tenant(secured.stubs, secured.keys["acme:writer"])
        routes = ("/api/overview", "/api/user-list", "/api/items/dracula/users")
        async with httpx.AsyncClient(base_url=secured.base_url) as client:
            for route in routes:
                assert (await client.get(route)).status_code == 401
            acme = {"Authorization": f"Bearer {secured.keys['acme:reader']}"}
            rival = {"Authorization": f"Bearer {secured.keys['rival:reader']}"}
            mine = (await client.get("/api/overview", headers=acme)).json()
            assert mine["counts"]["users"] == 3
            assert [r["user_id"] for r in mine["recent"]] == ["alice"]
            theirs = (await client.get("/api/overview", headers=rival)).json()
            assert theirs == {
                "counts": {"items": 0, "users": 0, "events": 0},
                "recent": [],
            }
            listed = (await client.get("/api/user-list", headers=rival)).json()
            assert listed["users"] == [] and listed["total"] == 0
            review = (await client.get("/api/users/alice", headers=acme)).json()
            cited = review["tree"]["nodes"][0]["evidence"][0]["item_id"]
            route = f"/api/items/{cited}/users"
            citing = (await client.get(route, headers=acme)).json()
            assert "alice" in [u["user_id"] for u in citing["users"]]
            hidden = (await client.get(route, headers=rival)).json()
            assert hidden["users"] == [] and hidden["item"]["exists"] is False
    finally:
        await secured.stop()
