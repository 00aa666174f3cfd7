"""The explainability review page: its read-only JSON API, and the page itself driven in
Debian's chromium (headless, through Playwright) against a live server with the sample data.

Without chromium or Playwright the browser tests skip, unless INTEREST_TREE_REQUIRE_BROWSER=1
(as in CI, after `make browser`) makes them fail instead. The screenshot goes to
artifacts/review-page.png; INTEREST_TREE_UPDATE_DOCS=1 also refreshes docs/review-page.png.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from interesttree.v1 import catalog_pb2, interest_pb2, recommendation_pb2

from server.http import MAX_RECOMMENDATIONS

from ..http_server import ServerWithHttp

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("INTEREST_TREE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


async def item_titles(served: ServerWithHttp) -> dict[str, str]:
    page = await served.running.stubs.catalog.ListItems(
        catalog_pb2.ListItemsRequest(page_size=1000)
    )
    return {item.name.removeprefix("items/"): item.title for item in page.items}


async def get_json(served: ServerWithHttp, path: str) -> tuple[int, Any]:
    async with httpx.AsyncClient(base_url=served.base_url) as client:
        response = await client.get(path)
    return response.status_code, response.json()


# JSON API --------------------------------------------------------------------------------


async def test_review_api_shows_tree_titles_attribution_and_revisions(
    reviewed: ServerWithHttp,
) -> None:
    stubs = reviewed.running.stubs
    tree = (
        await stubs.interests.GetInterestTree(
            interest_pb2.GetInterestTreeRequest(name="users/alice/interestTree")
        )
    ).tree
    status, review = await get_json(reviewed, "/api/users/alice")
    assert status == 200
    assert review["tree"]["revision"] == tree.revision == 2
    assert [node["id"] for node in review["tree"]["nodes"]] == [node.id for node in tree.nodes]
    by_id = {node["id"]: node for node in review["tree"]["nodes"]}
    for node in tree.nodes:
        shown = by_id[node.id]
        assert (shown["label"], shown["weight"]) == (node.label, node.weight)
        assert [e["item_id"] for e in shown["evidence"]] == [
            name.removeprefix("items/") for name in node.evidence_items
        ]
    titles = {e["title"] for node in review["tree"]["nodes"] for e in node["evidence"]}
    assert {"Dracula", "Carmilla", "Frankenstein", "The Skylark of Space"} <= titles

    assert [level["level"] for level in review["levels"]] == [1, 2, 3]
    for level in review["levels"]:
        assert sum(node["weight"] for node in level["nodes"]) == pytest.approx(1.0)

    expected = await stubs.recommender.Recommend(
        recommendation_pb2.RecommendRequest(user="users/alice", page_size=MAX_RECOMMENDATIONS)
    )
    shown_recs = review["recommendations"]
    assert [f"items/{rec['item_id']}" for rec in shown_recs] == [
        rec.item for rec in expected.recommendations
    ]
    for rec, proto in zip(shown_recs, expected.recommendations, strict=True):
        assert [node["id"] for node in rec["nodes"]] == list(proto.node_ids)
        assert rec["title"] and not rec["title"].startswith("items/")

    assert [entry["revision"] for entry in review["revisions"]] == [2, 1]
    latest, first = review["revisions"]
    assert first["changes"] is None
    changes = latest["changes"]
    assert "Gothic horror" in {node["label"] for node in changes["added"]}
    gained = {title["title"] for node in changes["evidence_changed"] for title in node["gained"]}
    assert {"Dracula", "Carmilla", "Frankenstein"} <= gained
    assert changes["summary"] != "no change"


async def test_review_api_is_read_only_and_rejects_bad_lookups(reviewed: ServerWithHttp) -> None:
    status, body = await get_json(reviewed, "/api/users/bob")
    assert status == 200 and body == {"user": "users/bob", "tree": None}
    # Looking bob up built nothing.
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await reviewed.running.stubs.interests.GetInterestTree(
            interest_pb2.GetInterestTreeRequest(name="users/bob/interestTree")
        )
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND

    assert (await get_json(reviewed, "/api/users/nobody"))[0] == 404
    assert (await get_json(reviewed, "/api/users/bad%20id"))[0] == 400
    status, users = await get_json(reviewed, "/api/users?prefix=a")
    assert status == 200 and users == {"users": ["alice"]}


# In the browser --------------------------------------------------------------------------


def _browser_or_skip() -> Any:
    """Playwright's async API module, or a skip (a failure where the browser is required)."""
    required = os.environ.get("INTEREST_TREE_REQUIRE_BROWSER") == "1"
    problem = ""
    if not Path(CHROMIUM).exists():
        problem = f"{CHROMIUM} is missing (run `make browser`)"
    try:
        import playwright.async_api as api
    except ImportError:
        problem = problem or "the playwright package is missing (run `make setup`)"
    if problem:
        if required:
            pytest.fail(problem)
        pytest.skip(problem)
    return api


async def test_review_page_in_chromium(reviewed: ServerWithHttp) -> None:
    api = _browser_or_skip()
    stubs = reviewed.running.stubs
    tree = (
        await stubs.interests.GetInterestTree(
            interest_pb2.GetInterestTreeRequest(name="users/alice/interestTree")
        )
    ).tree
    titles = await item_titles(reviewed)
    first_rec = (
        await stubs.recommender.Recommend(
            recommendation_pb2.RecommendRequest(user="users/alice", page_size=MAX_RECOMMENDATIONS)
        )
    ).recommendations[0]
    labels = {node.id: node.label for node in tree.nodes}

    async with api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            problems: list[str] = []
            requested: list[str] = []
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.on("request", lambda request: requested.append(request.url))

            await page.goto(f"{reviewed.base_url}/?user=alice")
            await page.wait_for_selector("body[data-loaded='alice']", timeout=30_000)

            # The tree, coarse to fine: every node, each level nested in its parent.
            assert await page.locator("#tree li.node").count() == len(tree.nodes)
            for node in tree.nodes:
                card = page.locator(f"#node-{node.id} > .node-card")
                assert await card.locator(".node-label").inner_text() == node.label
                assert node.explanation in await card.locator(".explanation").inner_text()
                evidence = await card.locator(".evidence li").all_inner_texts()
                assert evidence == [
                    titles[name.removeprefix("items/")] for name in node.evidence_items
                ]
                if node.parent_id:
                    nested = page.locator(f"#node-{node.parent_id} #node-{node.id}")
                    assert await nested.count() == 1
            space_opera = next(node for node in tree.nodes if node.label == "Space opera")
            await page.locator(f"#node-{space_opera.id}").scroll_into_view_if_needed()
            assert await page.locator(f"#node-{space_opera.id} .node-label").is_visible()

            # The chart: a row per level, a segment per node.
            assert await page.locator("#chart svg .chart-row").count() == 3
            assert await page.locator("#chart svg rect.share").count() == len(tree.nodes)

            # An attribution: the first recommendation names the nodes that brought it.
            first = page.locator("#recommendations li.recommendation").first
            assert (
                await first.locator(".rec-title").inner_text()
                == titles[first_rec.item.removeprefix("items/")]
            )
            chips = await first.locator(".chip .chip-label").all_inner_texts()
            assert chips == [labels[node_id] for node_id in first_rec.node_ids]
            await first.locator(".chip").first.click()
            highlighted = page.locator(f"#node-{first_rec.node_ids[0]}.highlight")
            await highlighted.wait_for(state="visible", timeout=5_000)

            # The reviewer moves the level weights: only level 1 counts, and the list is
            # recommended again, every item now attributed to level-1 interests alone.
            depth = await page.locator("#weight-controls input[type=range]").count()
            assert depth == max(node.level for node in tree.nodes)
            for level in range(1, depth + 1):
                await page.locator(f"#weight-{level}").fill("1" if level == 1 else "0")
            await page.click("#apply-weights")
            weights = ",".join(["1", *["0"] * (depth - 1)])
            await page.locator(f"body[data-weights='{weights}']").wait_for(state="attached")
            chips_now = page.locator("#recommendations li.recommendation .chip")
            assert await chips_now.count() > 0
            assert await page.locator("#recommendations .chip:not([data-level='1'])").count() == 0

            # The revisions with what changed.
            revisions = page.locator("#revisions li.revision")
            assert await revisions.count() == 2
            latest = await revisions.first.inner_text()
            assert "Revision 2" in latest and "Gothic horror" in latest and "Dracula" in latest

            artifacts = REPO / "artifacts"
            artifacts.mkdir(exist_ok=True)
            await page.wait_for_timeout(2_500)  # let the highlight fade before the picture
            shot = artifacts / "review-page.png"
            await page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            if os.environ.get("INTEREST_TREE_UPDATE_DOCS") == "1":
                (REPO / "docs").mkdir(exist_ok=True)
                shutil.copyfile(shot, REPO / "docs" / "review-page.png")

            assert problems == [], "errors while showing alice"

            # Looking up another user from the form: bob has events but no tree yet.
            await page.fill("#user", "bob")
            await page.click("#lookup button")
            # The page's CSP forbids eval, so waits use locators, not JS predicates.
            await api.expect(page.locator("#status")).to_contain_text("no interest tree")
            assert await page.locator("#review").is_hidden()
            await page.fill("#user", "nobody")
            await page.click("#lookup button")
            await api.expect(page.locator("#status")).to_contain_text("no user")
            # The 404 is the only error, and the browser reports it as such.
            assert problems == [
                "Failed to load resource: the server responded with a status of 404 (Not Found)"
            ]
            # Nothing comes from anywhere but the service itself (no CDN).
            assert requested and all(
                url.startswith(reviewed.base_url) or url.startswith("data:") for url in requested
            ), requested
        finally:
            await browser.close()
