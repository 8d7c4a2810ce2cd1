"""The dispatcher page in real headless Chromium (Debian's, driven by Playwright)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from playwright.async_api import Browser, Page, async_playwright

from lab import lab
from tests.conftest import place_call

pytestmark = pytest.mark.lab

CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


REGION = [0.0, 0.0, 1000.0, 800.0]


async def view_box(page: Page) -> list[float]:
    return [float(v) for v in (await page.get_attribute("#map", "viewBox") or "").split()]


async def shows_the_caller(page: Page, source: str) -> None:
    """The map is zoomed in, and the uncertainty circle of that source lies wholly in view."""
    x, y, width, height = await view_box(page)
    assert width < REGION[2] / 4 and height < REGION[3] / 4  # zoomed in, not the region
    circle = page.locator(f".caller[data-source='{source}'] circle.uncertainty")
    cx, cy, r = [float(await circle.get_attribute(name) or "nan") for name in ("cx", "cy", "r")]
    assert x <= cx - r and cx + r <= x + width
    assert y <= cy - r and cy + r <= y + height


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield chromium
        await chromium.close()


async def test_an_answered_call_shows_on_the_dispatchers_page_and_aml_moves_it(
    verbund: lab.Verbund, start_service, start_desks, browser: Browser
) -> None:
    await start_service("jena")
    await start_desks("jena", ["jena-d1"])
    page = await browser.new_page()
    web = f"http://127.0.0.1:{verbund.ports['jena'].web}"
    await page.goto(f"{web}/dispatch/jena-d1?token={verbund.desk_tokens['jena-d1']}")
    await page.wait_for_selector("text=verbunden als jena-d1")
    await page.wait_for_selector("path.district[data-ags='16053']", state="attached")
    assert "GeoBasis-DE / BKG 2021" in await page.inner_text("#attribution")

    call = asyncio.create_task(
        place_call(verbund, "jena", "+4915112348001", talk_ms=8000, position=(50.9279, 11.5891, 25))
    )
    await page.wait_for_selector("#caller:has-text('+4915112348001')", timeout=20000)
    pidf_row = await page.inner_text(".loc[data-source='pidf']")
    assert "50.92790, 11.58910 ±25 m" in pidf_row
    assert "Jena (zuständig: ZLS Jena)" in pidf_row
    assert await page.locator(".caller[data-source='pidf']").count() == 1
    await shows_the_caller(page, "pidf")
    assert await page.inner_text("#incident") == ""  # nothing taken over without a click

    now_ms = str(int(time.time() * 1000))
    form = {
        "location_latitude": "50.9301",
        "location_longitude": "11.5902",
        "location_accuracy": "9",
        "location_source": "gps",
        "time": now_ms,
        "location_time": now_ms,
        "device_number": "+4915112348001",
    }
    async with (
        aiohttp.ClientSession() as client,
        client.post(
            f"{web}/aml/v1/https", data=form, headers={"Authorization": f"Bearer {verbund.aml_token}"}
        ) as response,
    ):
        assert response.status == 202
    await page.wait_for_selector(".caller[data-source='aml']", state="attached", timeout=5000)
    aml_row = await page.inner_text(".loc[data-source='aml']")
    assert "50.93010, 11.59020 ±9 m" in aml_row
    assert "Jena (zuständig: ZLS Jena)" in aml_row
    await shows_the_caller(page, "aml")  # the map follows the newest position

    await page.click("#zoom-region")
    assert await view_box(page) == REGION
    await page.click("#zoom-caller")
    await shows_the_caller(page, "aml")

    await page.click(".loc[data-source='aml'] button")
    assert "50.93010, 11.59020" in await page.inner_text("#incident")
    await page.screenshot(path=str(lab.lab_dir() / "dispatch-page.png"))
    assert await call == 0
    await page.wait_for_selector("#card.idle", timeout=10000)
    assert await view_box(page) == REGION  # the call is over: the whole region again


async def test_the_page_needs_the_dispatchers_own_token(verbund: lab.Verbund, start_service, browser: Browser) -> None:
    await start_service("jena")
    page = await browser.new_page()
    web = f"http://127.0.0.1:{verbund.ports['jena'].web}"
    response = await page.goto(f"{web}/dispatch/jena-d1?token={verbund.desk_tokens['jena-d2']}")
    assert response is not None and response.status == 403
    response = await page.goto(f"{web}/dispatch/jena-d1")
    assert response is not None and response.status == 401


async def test_the_supervisor_page_shows_waiting_callers_desks_and_a_partner_that_went_silent(
    verbund: lab.Verbund, start_service, start_desks, browser: Browser
) -> None:
    from telephony import events
    from tests.conftest import next_event

    jena = await start_service("jena")
    gera = await start_service("gera")
    await start_desks("jena", ["jena-d1"])  # Gera has nobody: nothing can be moved there
    page = await browser.new_page()
    web = f"http://127.0.0.1:{verbund.ports['jena'].web}"
    await page.goto(f"{web}/supervisor?token={verbund.read_token}")
    await page.wait_for_selector("section.site.live[data-site='gera']")
    with jena.hub.subscribe() as seen:
        talking = asyncio.create_task(place_call(verbund, "jena", "+4936411118001", talk_ms=12000))
        await next_event(seen, events.DispatcherAnswered)
        waiting = asyncio.create_task(place_call(verbund, "jena", "+4936411118002", talk_ms=1000))
        await next_event(seen, events.CallerJoinedQueue, lambda e: e.caller_number == "+4936411118002")
    jena_box = "section.site[data-site='jena']"
    # the page refreshes every second: wait until it shows the caller waiting behind the busy desk
    await page.wait_for_selector(f"{jena_box} [data-field='waiting']:text-is('1')")
    await page.wait_for_selector(f"{jena_box} tr[data-desks='talking'] td:text-is('1')")
    assert "partner has no spare dispatcher" in await page.inner_text("#overflow-now")

    gera.stop()  # the partner's service goes away: shown as unknown, not as idle
    await page.wait_for_selector("section.site.unknown[data-site='gera']", timeout=10000)
    assert "UNBEKANNT" in await page.inner_text("section.site[data-site='gera']")
    assert await waiting == 0
    assert await talking == 0
    await page.close()


async def test_the_supervisor_page_shows_a_caller_going_round_and_the_alarm(
    verbund: lab.Verbund, start_service, browser: Browser
) -> None:
    from telephony import events
    from tests.conftest import next_event

    jena = await start_service("jena", circling={"alarm_after_s": 2})
    page = await browser.new_page()
    await page.goto(f"http://127.0.0.1:{verbund.ports['jena'].web}/supervisor?token={verbund.read_token}")
    jena_box = "section.site[data-site='jena']"
    await page.wait_for_selector(f"{jena_box} [data-field='circling']:text-is('0')")
    with jena.hub.subscribe() as seen:
        call = asyncio.create_task(place_call(verbund, "jena", "+4936411118003", hang_up_after_ms=8000))
        await next_event(seen, events.CallerWentRound)  # nobody at either centre
        await page.wait_for_selector(f"{jena_box} [data-field='circling']:text-is('1')")
        await page.wait_for_selector(f"{jena_box} .circling.alarm [data-field='circling-alarm']")
        assert "in der Schleife" in await page.inner_text(f"{jena_box} .circling")
        assert "ALARM" in await page.inner_text(f"{jena_box} .circling")
        assert await call == 0
    await page.wait_for_selector(f"{jena_box} [data-field='circling']:text-is('0')", timeout=10000)
    await page.close()
