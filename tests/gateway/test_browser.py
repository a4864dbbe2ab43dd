"""The web page in headless Chromium (Debian's `chromium` package, driven by playwright)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not CHROMIUM.exists() and shutil.which("chromium") is None,
        reason="needs Debian's chromium (apt-get install -y chromium)",
    ),
]


def test_page_user_lookup_and_rating(gateway, tmp_path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright package")
    executable = str(CHROMIUM if CHROMIUM.exists() else shutil.which("chromium"))
    errors: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(gateway.url + "/")
            # the training curve is drawn from the manifest's history
            page.wait_for_selector("#chart-rmse svg circle")
            assert page.locator("#chart-ndcg svg circle").count() == 4
            assert "round 4" in page.locator("#model-badge").inner_text()
            # look up user 4
            page.fill("#user-id", "4")
            page.select_option("#user-n", "5")
            page.click("#user-go")
            page.wait_for_selector("#user-results li")
            assert page.locator("#user-results li").count() == 5
            assert "Test Movie" in page.locator("#user-results li .title").first.inner_text()
            # search and rate three movies, then ask for recommendations
            page.fill("#search", "test movie")
            page.wait_for_selector("#search-results .search-row")
            rows = page.locator("#search-results .search-row")
            rated = []
            for i, stars in enumerate((5, 4, 2)):
                rated.append(rows.nth(i).get_attribute("data-movie-id"))
                rows.nth(i).locator(f".rate-btn[data-rating='{stars}']").click()
            assert page.locator("#my-count").inner_text() == "3"
            page.click("#me-go")
            page.wait_for_selector("#me-results li")
            assert page.locator("#me-results li").count() > 0
            assert "From your 3 ratings" in page.locator("#me-status").inner_text()
            titles = page.locator("#me-results li .title").all_inner_texts()
            assert not any(f"Test Movie {movie_id} (" in t for t in titles for movie_id in rated)
            # an unknown user shows the API's message
            page.fill("#user-id", "999")
            page.click("#user-go")
            page.locator("#user-status.error").wait_for()  # (the page's CSP forbids eval)
            assert "999" in page.locator("#user-status").inner_text()
            page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
        finally:
            browser.close()
    assert errors == []
