"""The web page in headless Chromium (Debian's `chromium` package, driven by playwright)."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from gateway.conftest import Gateway, make_checkpoint, start_gateway

from fedrec_app.core.checkpoint import read_checkpoint
from fedrec_app.core.config import app_defaults, parse_run_config
from fedrec_app.core.rated import rated_lists

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
STAR = "rgb(240, 165, 0)"  # style.css --star
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not CHROMIUM.exists() and shutil.which("chromium") is None,
        reason="needs Debian's chromium (apt-get install -y chromium)",
    ),
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright package")
    executable = str(CHROMIUM if CHROMIUM.exists() else shutil.which("chromium"))
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=FLAGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def app_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint with user factors, each user's rated movies (their two best-scored among
    them) and the hyperparameters a default `fedrec up` run writes (fold-in reads them)."""
    hyper = parse_run_config(app_defaults()).train_config().to_dict()
    hyper = {k: v for k, v in hyper.items() if k not in ("embedding_dim", "rank_dim")}
    return make_checkpoint(
        tmp_path_factory.mktemp("app-ckpt") / "final", num_items=60, hyperparameters=hyper
    )


@pytest.fixture(scope="module")
def app_gateway(
    app_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    started = start_gateway(app_checkpoint, tmp_path_factory.mktemp("gwlog"))
    yield started
    started.stop()


@contextmanager
def page_of(browser: Any, width: int = 1280, offline: bool = False) -> Iterator[Any]:
    """A page in a fresh context; ``offline``: every request to another host is aborted (and
    recorded), as on a machine without network. No page error may occur."""
    context = browser.new_context(viewport={"width": width, "height": 900})
    errors: list[str] = []
    blocked: list[str] = []
    if offline:

        def route(route: Any) -> None:
            if urlsplit(route.request.url).hostname in LOCAL_HOSTS:
                route.continue_()
            else:
                blocked.append(route.request.url)
                route.abort("internetdisconnected")

        context.route("**/*", route)
    page = context.new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.blocked = blocked
    try:
        yield page
    finally:
        context.close()
    assert errors == []


def rate_three(page: Any, stars: int) -> list[int]:
    """Rate the first three search results for "test movie" ``stars`` each; their ids."""
    page.fill("#search", "test movie")
    page.wait_for_selector("#search-results .search-row")
    rows = page.locator("#search-results .search-row")
    rated = []
    for i in range(3):
        rated.append(int(rows.nth(i).get_attribute("data-movie-id")))
        rows.nth(i).locator(f".rate-btn[data-rating='{stars}']").click()
    return rated


def fold_in_list(page: Any) -> list[int]:
    """Ask for the visitor's recommendations; the movie ids shown, in order."""
    page.locator("#me-results").evaluate("node => node.replaceChildren()")
    page.click("#me-go")
    page.wait_for_selector("#me-results li")
    items = page.locator("#me-results li.result")
    return [int(items.nth(i).get_attribute("data-movie-id")) for i in range(items.count())]


def test_page_user_lookup_and_rating(gateway, browser, tmp_path) -> None:
    with page_of(browser) as page:
        page.goto(gateway.url + "/")
        # the training curve is drawn from the manifest's history
        page.wait_for_selector("#chart-rmse svg circle")
        assert page.locator("#chart-ndcg svg circle.test").count() == 4
        assert "test (held out)" in page.locator("#curve-card").inner_text()
        assert "round 4" in page.locator("#model-badge").inner_text()
        # look up user 4
        page.fill("#user-id", "4")
        page.select_option("#user-n", "5")
        page.click("#user-go")
        page.wait_for_selector("#user-results li")
        assert page.locator("#user-results li").count() == 5
        assert "Test Movie" in page.locator("#user-results li .title").first.inner_text()
        # search and rate three movies, then ask for recommendations
        rated = rate_three(page, 5)
        assert page.locator("#my-count").inner_text() == "3"
        ids = fold_in_list(page)
        assert ids and not set(ids) & set(rated)
        assert "From your 3 ratings" in page.locator("#me-status").inner_text()
        # an unknown user shows the API's message
        page.fill("#user-id", "999")
        page.click("#user-go")
        page.locator("#user-status.error").wait_for()  # (the page's CSP forbids eval)
        assert "999" in page.locator("#user-status").inner_text()
        page.screenshot(path=str(tmp_path / "page.png"), full_page=True)


def test_user_4_sees_no_movie_they_rated_and_what_orders_the_list(
    app_gateway, app_checkpoint, browser
) -> None:
    ckpt = read_checkpoint(app_checkpoint)
    row = ckpt.arrays["user_ids"].tolist().index(4)
    rated = set(rated_lists(ckpt.arrays)[row].tolist())
    assert rated
    with page_of(browser) as page:
        page.goto(app_gateway.url + "/")
        page.fill("#user-id", "4")
        page.select_option("#user-n", "20")
        page.click("#user-go")
        page.wait_for_selector("#user-results li.result")
        items = page.locator("#user-results li.result")
        shown = [int(items.nth(i).get_attribute("data-movie-id")) for i in range(items.count())]
        assert len(shown) == 20 and not set(shown) & rated
        # the order is the match score, shown beside the predicted stars, and the page says so
        matches = [int(t.split("%")[0]) for t in items.locator(".match").all_inner_texts()]
        assert matches == sorted(matches, reverse=True)
        assert "ordered by match" in page.locator("#user-status").inner_text()
        assert "left out" in page.locator("#user-status").inner_text()
        assert items.locator(".stars").count() == 20


def test_rated_stars_turn_gold_in_the_search_list(app_gateway, browser) -> None:
    with page_of(browser) as page:
        page.goto(app_gateway.url + "/")
        rate_three(page, 4)
        page.mouse.move(0, 0)  # no hover colouring
        row = page.locator("#search-results .search-row").first
        colors = row.locator(".rate-btn").evaluate_all(
            "buttons => buttons.map(b => getComputedStyle(b).color)"
        )
        assert colors[:4] == [STAR] * 4 and colors[4] != STAR
        assert row.locator(".rate-btn[aria-pressed='true']").get_attribute("data-rating") == "4"
        # a new search shows the ratings already given
        page.fill("#search", "")
        page.fill("#search", "test movie")
        page.wait_for_selector("#search-results .search-row .rate-btn.on")
        assert page.locator("#search-results .search-row").first.locator(".on").count() == 4


def test_one_star_and_five_stars_give_different_lists(
    app_checkpoint, browser, gateway_factory: Callable[..., Gateway]
) -> None:
    # --min-rating 1: every movie passes the threshold, so only the ranking can change the list
    # (a 1-star visitor's lower predicted ratings would otherwise drop movies from it)
    gateway = gateway_factory(app_checkpoint, "--min-rating", "1")
    with page_of(browser) as page:
        page.goto(gateway.url + "/")
        rated = rate_three(page, 5)
        loved = fold_in_list(page)
        assert rate_three(page, 1) == rated  # the same three movies, now 1 star each
        assert page.locator("#my-count").inner_text() == "3"
        hated = fold_in_list(page)
        assert len(loved) == len(hated) == 10
        assert loved != hated, loved


def test_no_sideways_scroll_at_390_px(app_gateway, browser) -> None:
    with page_of(browser, width=390) as page:
        page.goto(app_gateway.url + "/")
        page.wait_for_selector("#chart-rmse svg circle")
        page.click("#user-go")
        page.wait_for_selector("#user-results li.result")
        rate_three(page, 5)
        fold_in_list(page)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, width


def test_docs_render_with_the_network_cut_off(app_gateway, browser) -> None:
    with page_of(browser, offline=True) as page:
        page.goto(app_gateway.url + "/docs")
        page.wait_for_selector(".swagger-ui .info .title", timeout=15_000)
        assert "fedrec gateway" in page.locator(".swagger-ui .info .title").inner_text()
        page.wait_for_selector(".swagger-ui .opblock-summary-path")
        paths = page.locator(".swagger-ui .opblock-summary-path").all_inner_texts()
        assert "/recommend" in " ".join(paths)
        assert page.blocked == []  # it asked for nothing outside the gateway


def test_the_footer_links_docs_only_when_served(
    app_checkpoint, browser, tmp_path, gateway_factory: Callable[..., Gateway]
) -> None:
    keys = tmp_path / "keys"
    keys.write_text("k" * 32 + "\n")
    keys.chmod(0o600)
    closed = gateway_factory(app_checkpoint, "--api-key-file", str(keys))
    with page_of(browser) as page:
        page.goto(closed.url + "/")
        assert page.locator("footer a[href='/docs']").count() == 0
        assert page.locator("footer a[href='/readyz']").count() == 1
