"""PIDF-LO parsing: the RFC 5491 shapes become a Position; hostile or broken bodies a LocationError."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from routing.location import LocationError, Position
from routing.pidf import parse_pidf

# Copy of /work/shared/domain/data/pidf_circle.xml (CI has the shared folder elsewhere).
CIRCLE = """<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf"
    xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model"
    xmlns:gp="urn:ietf:params:xml:ns:pidf:geopriv10"
    xmlns:gbp="urn:ietf:params:xml:ns:pidf:geopriv10:basicPolicy"
    xmlns:gml="http://www.opengis.net/gml"
    xmlns:gs="http://www.opengis.net/pidflo/1.0"
    xmlns:con="urn:ietf:params:xml:ns:geopriv:conf"
    entity="pres:+4915112345678@test.invalid">
  <dm:device id="handset1">
    <gp:geopriv>
      <gp:location-info>
        <gs:Circle srsName="urn:ogc:def:crs:EPSG::4326">
          <gml:pos>50.92720 11.58640</gml:pos>
          <gs:radius uom="urn:ogc:def:uom:EPSG::9001">15</gs:radius>
        </gs:Circle>
        <con:confidence pdf="normal">68</con:confidence>
      </gp:location-info>
      <gp:usage-rules>
        <gbp:retransmission-allowed>no</gbp:retransmission-allowed>
        <gbp:retention-expiry>2030-01-01T00:00:00Z</gbp:retention-expiry>
      </gp:usage-rules>
      <gp:method>GPS</gp:method>
    </gp:geopriv>
    <dm:deviceID>urn:gsma:imei:35347210-434354-0</dm:deviceID>
    <dm:timestamp>2025-01-01T12:00:00Z</dm:timestamp>
  </dm:device>
</presence>
"""

WGS84_2D = "urn:ogc:def:crs:EPSG::4326"
WGS84_3D = "urn:ogc:def:crs:EPSG::4979"
METRES = "urn:ogc:def:uom:EPSG::9001"


def tuple_pidf(location_info: str, method: str = "") -> str:
    """A minimal PIDF-LO with the location in tuple/status (the RFC 4119 place)."""
    method_element = f"<gp:method>{method}</gp:method>" if method else ""
    return f"""<presence xmlns="urn:ietf:params:xml:ns:pidf"
    xmlns:gp="urn:ietf:params:xml:ns:pidf:geopriv10" xmlns:gml="http://www.opengis.net/gml"
    xmlns:gs="http://www.opengis.net/pidflo/1.0" xmlns:cl="urn:ietf:params:xml:ns:pidf:geopriv10:civicAddr"
    entity="pres:caller@test.invalid">
  <tuple id="t1"><status><gp:geopriv>
    <gp:location-info>{location_info}</gp:location-info>{method_element}
  </gp:geopriv></status></tuple>
</presence>"""


def point(pos: str, srs: str = WGS84_2D) -> str:
    return f'<gml:Point srsName="{srs}"><gml:pos>{pos}</gml:pos></gml:Point>'


def circle(pos: str, radius: str, uom: str = METRES) -> str:
    radius_element = f'<gs:radius uom="{uom}">{radius}</gs:radius>'
    return f'<gs:Circle srsName="{WGS84_2D}"><gml:pos>{pos}</gml:pos>{radius_element}</gs:Circle>'


def polygon(ring: str, srs: str = WGS84_2D) -> str:
    exterior = f"<gml:exterior><gml:LinearRing>{ring}</gml:LinearRing></gml:exterior>"
    return f'<gml:Polygon srsName="{srs}">{exterior}</gml:Polygon>'


ELLIPSE = f"""<gs:Ellipse srsName="{WGS84_2D}"><gml:pos>50.8786 12.0824</gml:pos>
  <gs:semiMajorAxis uom="{METRES}">120.5</gs:semiMajorAxis><gs:semiMinorAxis uom="{METRES}">40</gs:semiMinorAxis>
  <gs:orientation uom="urn:ogc:def:uom:EPSG::9102">43.2</gs:orientation></gs:Ellipse>"""

# A 0.002° square around 50.93 11.59 (closed ring, the first vertex repeated at the end).
SQUARE_POSLIST = "<gml:posList>50.929 11.585 50.931 11.585 50.931 11.587 50.929 11.587 50.929 11.585</gml:posList>"
SQUARE_POS = "".join(
    f"<gml:pos>{pos}</gml:pos>" for pos in ("50.929 11.585", "50.931 11.585", "50.931 11.587", "50.929 11.587")
)
# Half the square's diagonal: 0.001° is 111.2 m north and 111.2 m · cos(50.93°) = 70.1 m east, hypot = 131.4 m.
SQUARE_RADIUS_M = 131.4

CIVIC_ONLY = '<cl:civicAddress xml:lang="de"><cl:country>DE</cl:country><cl:A3>Jena</cl:A3></cl:civicAddress>'

BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [
  <!ENTITY lol "lol">
  <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
  <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
  <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<presence xmlns="urn:ietf:params:xml:ns:pidf">&lol4;</presence>"""

EXTERNAL_ENTITY = """<?xml version="1.0"?>
<!DOCTYPE presence [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="pres:x@test.invalid">&xxe;</presence>"""


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (CIRCLE, Position(50.9272, 11.5864, 15.0, "Circle", "GPS")),
        (CIRCLE.encode(), Position(50.9272, 11.5864, 15.0, "Circle", "GPS")),
        (tuple_pidf(point("50.8786 12.0824"), "Cell"), Position(50.8786, 12.0824, 0.0, "Point", "Cell")),
        (tuple_pidf(point("-33.5 151.25 12.5", WGS84_3D)), Position(-33.5, 151.25, 0.0, "Point", altitude_m=12.5)),
        (tuple_pidf(ELLIPSE, "Triangulation"), Position(50.8786, 12.0824, 120.5, "Ellipse", "Triangulation")),
        (tuple_pidf(CIVIC_ONLY + circle("50.9 11.5", "0")), Position(50.9, 11.5, 0.0, "Circle")),
    ],
)
def test_supported_shapes(document: str | bytes, expected: Position) -> None:
    assert parse_pidf(document) == expected


@pytest.mark.parametrize("ring", [SQUARE_POSLIST, SQUARE_POS])
def test_polygon_becomes_a_circle_around_its_vertices(ring: str) -> None:
    position = parse_pidf(tuple_pidf(polygon(ring), "Manual"))
    assert (position.shape, position.method) == ("Polygon", "Manual")
    assert position.lat == pytest.approx(50.93)
    assert position.lon == pytest.approx(11.586)
    assert position.radius_m == pytest.approx(SQUARE_RADIUS_M, abs=0.5)


def test_3d_polygon_routes_by_its_vertices_and_keeps_their_mean_altitude() -> None:
    ring = "<gml:posList>50.929 11.585 200 50.931 11.585 210 50.931 11.587 220 50.929 11.585 200</gml:posList>"
    position = parse_pidf(tuple_pidf(polygon(ring, WGS84_3D)))
    assert position.lat == pytest.approx((50.929 + 50.931 + 50.931) / 3)
    assert position.altitude_m == pytest.approx(210.0)  # the distinct vertices' 200, 210, 220


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        (tuple_pidf(point("50.9 11.5", "urn:ogc:def:crs:EPSG::25832")), "srsName"),
        (tuple_pidf(point("50.9 11.5", "")), "srsName"),
        (tuple_pidf(point("50.9 11.5", WGS84_3D)), "3 numbers"),
        (tuple_pidf(point("91 11.5")), "WGS84"),
        (tuple_pidf(point("50.9 -180.5")), "WGS84"),
        (tuple_pidf(point("50.9 NaN")), "numeric"),
        (tuple_pidf(point("50.9 1e999")), "finite"),
        (tuple_pidf(point("50.9")), "2 numbers"),
        (tuple_pidf(circle("50.9 11.5", "-1")), "radius out of range"),
        (tuple_pidf(circle("50.9 11.5", "1000001")), "radius out of range"),
        (tuple_pidf(circle("50.9 11.5", "15", "urn:ogc:def:uom:EPSG::9002")), "metres"),
        (tuple_pidf(circle("50.9 11.5", "")), "numeric radius"),
        (tuple_pidf(ELLIPSE.replace("120.5", "inf")), "semiMajorAxis is not numeric"),
        (tuple_pidf(polygon("<gml:posList>50.1 11.1 50.2 11.2 50.1 11.1</gml:posList>")), "3 distinct"),
        (tuple_pidf(polygon("<gml:posList>50.1 11.1 50.2 11.2 50.3</gml:posList>")), "2 numbers"),
        (tuple_pidf(polygon("<gml:posList>10 179 10 -179 11 179</gml:posList>")), "too large"),
        (tuple_pidf("<gml:Polygon srsName='" + WGS84_2D + "'/>"), "LinearRing"),
        (BILLION_LAUGHS, "XML"),
        (EXTERNAL_ENTITY, "XML"),
        ("Hallo, hier ist ein Notfall", "XML"),
        (b"\xff\xfe<presence/>", "XML"),
        ("<presence xmlns='urn:ietf:params:xml:ns:pidf'><tuple>", "XML"),
        ("", "empty"),
        (b"", "empty"),
        ("<html/>", "no pidf:presence"),
        (CIRCLE.replace("gp:location-info", "gp:elsewhere"), "no location-info"),
        (tuple_pidf(CIVIC_ONLY), "no shape, only a civic address"),  # parse_pidf: a position or nothing
        (CIRCLE.replace("</presence>", "<!--" + "x" * 65536 + "--></presence>"), "larger than"),
    ],
)
def test_refusals_say_why(document: str | bytes, reason: str) -> None:
    with pytest.raises(LocationError, match=reason):
        parse_pidf(document)


@given(
    st.one_of(
        st.text(),
        st.binary(),
        st.text().map(lambda pos: CIRCLE.replace("50.92720 11.58640", pos)),
        st.binary().map(lambda junk: CIRCLE.encode().replace(b"15</gs:radius>", junk + b"</gs:radius>")),
    )
)
def test_only_location_errors_escape(document: str | bytes) -> None:
    with contextlib.suppress(LocationError):
        parse_pidf(document)
