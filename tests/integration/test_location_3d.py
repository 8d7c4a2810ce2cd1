"""A 3-D PIDF-LO (EPSG 4979) through the real lab: routed by lat/lon, the altitude on the dispatcher's page.

The carrier (sipp) sends a gs:Sphere with an altitude; Asterisk's res_geolocation hands it to the
dialplan as crs="3d"; Jena's service routes it to Gera by its position (Greiz), and the dispatcher
in Gera sees the position with "Höhe 312 m" from Jena's call record. Neither service logs the
position or the number above DEBUG.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from playwright.async_api import Browser, Page

from lab import lab
from routing.decision import Route
from tests.conftest import next_event, place_call
from tests.integration.test_dispatch_page import browser  # noqa: F401  (the Chromium fixture)
from tests.integration.test_routing_calls import both_services
from verbund112.features.hub import CallRouted
from verbund112.service import Service

pytestmark = pytest.mark.lab

NUMBER = "+4915112347001"
SPHERE_IN_GREIZ = (
    '<gs:Sphere srsName="urn:ogc:def:crs:EPSG::4979"><gml:pos>50.654700 12.199700 312.4</gml:pos>'
    '<gs:radius uom="urn:ogc:def:uom:EPSG::9001">30</gs:radius></gs:Sphere>'
)


@pytest.fixture
async def gera_desk(
    verbund: lab.Verbund,
    start_service,
    start_desks,
    browser: Browser,  # noqa: F811  (the fixture imported above)
) -> tuple[Service, Page]:
    """Both services reporting, desk gera-d1 registered and its page open: (Jena's service, the page)."""
    jena, _ = await both_services(start_service)
    await start_desks("gera", ["gera-d1"])
    page = await browser.new_page()
    await page.goto(f"http://127.0.0.1:{verbund.ports['gera'].web}/dispatch/gera-d1?token="
                    f"{verbund.desk_tokens['gera-d1']}")  # fmt: skip
    await page.wait_for_selector("text=verbunden als gera-d1")
    return jena, page


async def call_into_jena(
    verbund: lab.Verbund, desk: tuple[Service, Page], number: str, shape: str, source: str
) -> tuple[CallRouted, str]:
    """A 112 call with a PIDF-LO into Jena, answered in Gera: how Jena routed it, the card's row of `source`."""
    jena, page = desk
    with jena.hub.subscribe() as events:
        call = asyncio.create_task(place_call(verbund, "jena", number, talk_ms=8000, shape_xml=shape))
        routed = await next_event(events, CallRouted)
        await page.wait_for_selector(f"#caller:has-text('{number}')", timeout=20000)
        row = await page.inner_text(f".loc[data-source='{source}']")
        assert await call == 0, number
    return routed, row


async def test_a_3d_pidf_lo_call_is_routed_by_its_position_and_shows_its_altitude(
    verbund: lab.Verbund, gera_desk: tuple[Service, Page], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    routed, row = await call_into_jena(verbund, gera_desk, NUMBER, SPHERE_IN_GREIZ, "pidf")

    assert routed.position is not None and routed.location_problem == ""
    assert (routed.position.shape, routed.position.altitude_m) == ("Sphere", pytest.approx(312.4))
    assert routed.decision.route is Route.PARTNER and routed.decision.location is not None
    assert routed.decision.location.district == "Greiz"
    assert "50.65470, 12.19970 ±30 m, Höhe 312 m" in row
    # the services of both sites logged the call, the position only at DEBUG
    above_debug = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert any("call routed partner to gera" in text for text in above_debug)
    assert [text for text in above_debug if any(s in text for s in ("50.654", "12.199", "312", "15112347001"))] == []
    assert any("50.65470" in r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG)
