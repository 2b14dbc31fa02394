"""The operator page in a real browser: Debian's chromium, headless,
driven by playwright (which downloads nothing), against a real EP's page
served by aiohttp on loopback (``page_site`` in conftest.py).

Each test saves screenshots under its own temporary directory and prints
where (``pytest -s`` shows it; ``--basetemp DIR`` keeps them in DIR).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright

from ep_server.servicer import server_version

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PHONE = {"width": 375, "height": 812}
DESKTOP = {"width": 1280, "height": 900}


def installed(browser: Path) -> Path:
    """``browser``, which a test needs: it fails, never skips, without it."""
    if not browser.is_file():
        pytest.fail(
            f"the browser tests need Debian's chromium at {browser}: `make install`"
            " installs it (apt-get install chromium)",
            pytrace=False,
        )
    return browser


@pytest.fixture
def chromium() -> Path:
    return installed(CHROMIUM)


@pytest.fixture
async def browser(chromium: Path) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(chromium), args=ARGS)
        yield browser
        await browser.close()


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    folder = tmp_path / "screenshots"
    folder.mkdir()
    print(f"screenshots of the operator page: {folder}")
    return folder


async def open_page(browser: Browser, url: str, viewport: dict[str, int]) -> tuple[Page, list[str]]:
    """The page at ``url`` in a fresh context of ``viewport`` (a phone's
    when narrow), and a list that collects what should never happen: a
    console error (a blocked style, a script), a dialog, a second request."""
    phone = viewport["width"] < 600
    context = await browser.new_context(
        viewport=viewport, is_mobile=phone, has_touch=phone, device_scale_factor=2 if phone else 1
    )
    page = await context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("dialog", lambda d: problems.append(f"dialog: {d.message}"))
    page.on("request", lambda r: problems.append(r.url) if r.url != url else None)
    response = await page.goto(url)
    assert response is not None
    assert response.status == 200
    headers = response.headers
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert headers["cache-control"] == "no-store"
    assert headers["content-security-policy"].startswith("default-src 'none'")
    return page, problems


async def fits_its_width(page: Page) -> bool:
    return bool(await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"))


async def test_a_booking_site_shows_plugins_host_and_occupancy_on_a_phone_and_a_desktop(
    page_site, browser: Browser, screenshots: Path
) -> None:
    site = await page_site(books=True)
    for name, viewport in (("phone", PHONE), ("desktop", DESKTOP)):
        page, problems = await open_page(browser, site.url, viewport)
        body = await page.inner_text("body")
        assert f"ep-server {server_version()}" in body
        plugins = await page.locator("h3", has=page.locator(".state")).all_inner_texts()
        assert [" ".join(p.split()) for p in plugins] == [
            "booker loaded",
            "hostile failed",
            "unwanted blocked",
        ]
        assert site.hostile in body  # shown as text, never run
        assert "64GiB" in body  # the host's memory
        captions = await page.locator("figure figcaption").all_inner_texts()
        assert captions == ["cores", "gpus", "memory"]
        assert await page.locator("figure svg.timeline[role=img] title").count() == 3
        cores = page.locator("figure").first
        assert await cores.locator("path.booked").count() == 1
        assert await cores.locator("path.offered").count() == 1
        assert await cores.locator("tbody tr").count() == 8  # 7 days from 09:00: 8 dates
        # The style sheet applies (its hash is in the policy): booked is blue.
        fill = await cores.locator("path.booked").evaluate("p => getComputedStyle(p).fill")
        assert fill == "rgb(43, 108, 176)"
        html = await page.content()
        assert [s for s in site.secrets if s in html] == []
        if name == "phone":
            assert await fits_its_width(page)
        await page.screenshot(path=screenshots / f"booking-site-{name}.png", full_page=True)
        assert problems == []
        await page.context.close()


def test_without_chromium_a_browser_test_fails_saying_how_to_install_it(tmp_path: Path) -> None:
    with pytest.raises(pytest.fail.Exception, match="`make install` installs it"):
        installed(tmp_path / "chromium")


async def test_a_site_without_bookings_says_so_and_draws_nothing(
    page_site, browser: Browser, screenshots: Path
) -> None:
    site = await page_site(books=False)
    page, problems = await open_page(browser, site.url, PHONE)
    body = await page.inner_text("body")
    assert "This site takes no bookings" in body
    assert await page.locator("svg").count() == 0
    assert await fits_its_width(page)
    await page.screenshot(path=screenshots / "no-bookings-phone.png", full_page=True)
    assert problems == []
    await page.context.close()
