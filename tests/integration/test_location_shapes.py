"""Issue 16 through the real lab: an Android-style 3-D Ellipsoid, a cell's ArcBand and a civic address.

Each call enters at Jena (sipp as the carrier, the PIDF-LO in a multipart INVITE); Asterisk's
res_geolocation hands the dialplan GEOLOC_PROFILE(location_info); Jena's service routes the call
to Gera by the Ellipsoid's and the ArcBand's position, and by the civic address's Gemeinde (Bad
Köstritz, Greiz), marked "civic". The dispatcher in Gera sees each on the card, the address with
its German labels. Nothing personal is logged above DEBUG.
"""

from __future__ import annotations

import logging

import pytest
from playwright.async_api import Page

from lab import lab
from routing.decision import Route
from tests.integration.test_dispatch_page import browser  # noqa: F401  (the Chromium fixture)
from tests.integration.test_location_3d import call_into_jena, gera_desk  # noqa: F401  (gera_desk: a fixture)
from verbund112.service import Service

pytestmark = pytest.mark.lab

# Android's IMS stack: its emergency location as a 3-D Ellipsoid (semi-axes = accuracy), in Gera
ELLIPSOID_IN_GERA = (
    '<gs:Ellipsoid srsName="urn:ogc:def:crs:EPSG::4979"><gml:pos>50.878600 12.082400 231.5</gml:pos>'
    '<gs:semiMajorAxis uom="urn:ogc:def:uom:EPSG::9001">15</gs:semiMajorAxis>'
    '<gs:semiMinorAxis uom="urn:ogc:def:uom:EPSG::9001">15</gs:semiMinorAxis>'
    '<gs:verticalAxis uom="urn:ogc:def:uom:EPSG::9001">3</gs:verticalAxis>'
    '<gs:orientation uom="urn:ogc:def:uom:EPSG::9102">0</gs:orientation></gs:Ellipsoid>'
)
# A network location server's cell sector: apex at the mast in Greiz, 200-600 m, 60° wide
ARCBAND_IN_GREIZ = (
    '<gs:ArcBand srsName="urn:ogc:def:crs:EPSG::4326"><gml:pos>50.654700 12.199700</gml:pos>'
    '<gs:innerRadius uom="urn:ogc:def:uom:EPSG::9001">200</gs:innerRadius>'
    '<gs:outerRadius uom="urn:ogc:def:uom:EPSG::9001">600</gs:outerRadius>'
    '<gs:startAngle uom="urn:ogc:def:uom:EPSG::9102">30</gs:startAngle>'
    '<gs:openingAngle uom="urn:ogc:def:uom:EPSG::9102">60</gs:openingAngle></gs:ArcBand>'
)
# A fixed line's registered address: only the address, no position
ADDRESS_IN_BAD_KOESTRITZ = (
    '<ca:civicAddress xmlns:ca="urn:ietf:params:xml:ns:pidf:geopriv10:civicAddr" xml:lang="de">'
    "<ca:country>DE</ca:country><ca:A1>Thüringen</ca:A1><ca:A3>Bad Köstritz</ca:A3>"
    "<ca:RD>Heinrich-Schütz-Straße</ca:RD><ca:HNO>12</ca:HNO><ca:FLR>1</ca:FLR>"
    "<ca:NAM>Praxis Dr. Muster</ca:NAM><ca:PC>07586</ca:PC></ca:civicAddress>"
)

CALLS = [
    # number, shape, source on the card, district, what the card's row shows
    ("+4915112347101", ELLIPSOID_IN_GERA, "pidf", "Gera", "50.87860, 12.08240 ±15 m, Höhe 232 m"),
    ("+4915112347102", ARCBAND_IN_GREIZ, "pidf", "Greiz", "50.65470, 12.19970 ±600 m"),
    ("+4936601234567", ADDRESS_IN_BAD_KOESTRITZ, "civic", "Greiz",
     "Adresse (Netz): Name: Praxis Dr. Muster, Straße: Heinrich-Schütz-Straße, Hausnummer: 12, Etage: 1, "
     "Ort: 07586 Bad Köstritz, Bundesland: Thüringen, Land: DE Greiz (zuständig: ZLS Gera)"),
]  # fmt: skip
PERSONAL = ("50.87", "12.08", "50.65", "12.19", "231", "Schütz", "Muster", "15112347", "36601234567")


async def test_an_ellipsoid_an_arcband_and_a_civic_address_are_routed_to_gera_and_shown_on_its_card(
    verbund: lab.Verbund,
    gera_desk: tuple[Service, Page],  # noqa: F811  (the fixture imported above)
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    for number, shape, source, district, shown in CALLS:
        routed, row = await call_into_jena(verbund, gera_desk, number, shape, source)
        print(f"{number}: {routed.decision.reason}; card: {row}")
        assert routed.location_problem == "", routed.location_problem
        assert routed.decision.route is Route.PARTNER and routed.decision.centre == "gera"
        assert routed.decision.location is not None
        assert (routed.decision.location.source, routed.decision.location.district) == (source, district)
        assert shown in row
        if source == "civic":
            assert routed.position is None and routed.decision.reason.startswith("civic address in Bad Köstritz")
            assert routed.record is not None and routed.record.address is not None
            assert routed.record.address["A3"] == "Bad Köstritz"
        else:
            assert routed.position is not None and routed.position.shape == shape[4:].split(" ")[0]

    # the services of both sites logged the calls, positions and addresses only at DEBUG
    above_debug = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert sum("call routed partner to gera" in text for text in above_debug) == 3
    assert [text for text in above_debug if any(s in text for s in PERSONAL)] == []
    assert any("Heinrich-Schütz-Straße" in r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG)
