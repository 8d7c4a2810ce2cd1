"""Issue 16: ArcBand, the altitude in a 2-D pos, the next shape after a bad one, civic addresses.

Both paths: the PIDF-LO document (routing.pidf) and GEOLOC_PROFILE(location_info), the string
Asterisk hands the dialplan (routing.location).
"""

from __future__ import annotations

import pytest

from routing.location import (
    CivicAddress,
    LocationError,
    Position,
    parse_location_info,
    parse_location_profile,
)
from routing.pidf import parse_pidf, parse_pidf_lo
from tests.unit.test_pidf import METRES, WGS84_2D, WGS84_3D, circle, point, polygon, tuple_pidf

DEGREES = "urn:ogc:def:uom:EPSG::9102"


def arcband(inner: str = "3594", outer: str = "4148", srs: str = WGS84_2D, angle_uom: str = DEGREES) -> str:
    return (
        f'<gs:ArcBand srsName="{srs}"><gml:pos>50.6547 12.1997</gml:pos>'
        f'<gs:innerRadius uom="{METRES}">{inner}</gs:innerRadius>'
        f'<gs:outerRadius uom="{METRES}">{outer}</gs:outerRadius>'
        f'<gs:startAngle uom="{angle_uom}">20</gs:startAngle><gs:openingAngle uom="{angle_uom}">20</gs:openingAngle>'
        "</gs:ArcBand>"
    )


def test_an_arcband_is_its_apex_with_the_outer_radius() -> None:
    assert parse_pidf(tuple_pidf(arcband(), "TA-NMR")) == Position(50.6547, 12.1997, 4148.0, "ArcBand", "TA-NMR")
    as_asterisk_writes_it = ('shape="ArcBand",crs="2d",pos="50.6547 12.1997",innerRadius="3594",'
                             'outerRadius="4148",startAngle="20 radians",openingAngle="20 radians"')  # fmt: skip
    assert parse_location_info(as_asterisk_writes_it, "TA-NMR") == Position(
        50.6547, 12.1997, 4148.0, "ArcBand", "TA-NMR"
    )


@pytest.mark.parametrize(
    ("shape", "reason"),
    [
        (arcband(inner="5000"), "innerRadius is larger"),
        (arcband(srs=WGS84_3D), "EPSG::4326"),  # RFC 5491: ArcBand is 2-D only
        (arcband(angle_uom=METRES), "degrees or radians"),
        (arcband(outer="-1"), "outerRadius out of range"),
        (arcband().replace("gs:openingAngle", "gs:elsewhere"), "openingAngle"),
    ],
)
def test_a_broken_arcband_is_refused_with_its_reason(shape: str, reason: str) -> None:
    with pytest.raises(LocationError, match=reason):
        parse_pidf(tuple_pidf(shape))


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('shape="ArcBand",crs="2d",pos="50.6 12.1",innerRadius="9",outerRadius="5",startAngle="0",openingAngle="9"',
         "innerRadius is larger"),
        ('shape="ArcBand",crs="2d",pos="50.6 12.1",innerRadius="1",outerRadius="5",startAngle="x",openingAngle="9"',
         "startAngle"),
        ('shape="ArcBand",crs="2d",pos="50.6 12.1",innerRadius="1",outerRadius="5",startAngle="1 grad",'
         'openingAngle="9"', "startAngle"),
        ('shape="ArcBand",crs="3d",pos="50.6 12.1 200",innerRadius="1",outerRadius="5",startAngle="1",'
         'openingAngle="9"', "crs"),
        ('shape="ArcBand",crs="2d",pos="50.6 12.1",innerRadius="1",startAngle="1",openingAngle="9"', "outerRadius"),
    ],
)  # fmt: skip
def test_a_broken_arcband_from_asterisk_is_refused(text: str, reason: str) -> None:
    with pytest.raises(LocationError, match=reason):
        parse_location_info(text)


def test_the_altitude_in_a_single_2d_pos_is_ignored_on_both_paths() -> None:
    assert parse_pidf(tuple_pidf(point("48.123 14.456 20.7"))) == Position(48.123, 14.456, 0.0, "Point")
    assert parse_pidf(tuple_pidf(circle("48.123 14.456 20.7", "24"))) == Position(48.123, 14.456, 24.0, "Circle")
    text = 'shape="Circle",crs="2d",pos="48.123 14.456 20.7",radius="24"'
    assert parse_location_info(text) == Position(48.123, 14.456, 24.0, "Circle")


@pytest.mark.parametrize(
    "pos",
    ["48.123 14.456 x", "48.123 14.456 20.7 1", "48.123 14.456 inf"],
)
def test_a_third_value_that_is_no_number_still_refuses_the_pos(pos: str) -> None:
    with pytest.raises(LocationError):
        parse_pidf(tuple_pidf(point(pos)))
    with pytest.raises(LocationError):
        parse_location_info(f'shape="Point",crs="2d",pos="{pos}"')


def test_a_2d_poslist_with_altitudes_stays_refused() -> None:
    ring = "50.1 11.1 200 50.2 11.2 200 50.2 11.1 200"  # 9 numbers: never pairs
    with pytest.raises(LocationError, match="2 numbers per point"):
        parse_pidf(tuple_pidf(polygon(f"<gml:posList>{ring}</gml:posList>")))
    with pytest.raises(LocationError, match="'lat lon'"):
        parse_location_info(f'shape="Polygon",crs="2d",posList="{ring}"')


def test_an_unusable_shape_is_skipped_for_the_next_with_its_reason_kept() -> None:
    found = parse_pidf_lo(tuple_pidf(circle("50.9 999", "5") + arcband(inner="9999") + point("50.93 11.59"), "GPS"))
    assert found.position == Position(50.93, 11.59, 0.0, "Point", "GPS")
    assert len(found.problems) == 2
    assert found.problems[0].startswith("Circle: ") and "WGS84" in found.problems[0]
    assert found.problems[1].startswith("ArcBand: ") and "innerRadius" in found.problems[1]


def test_an_unusable_location_info_or_tuple_is_skipped_for_the_next() -> None:
    first = tuple_pidf(circle("x y", "5"))
    second = tuple_pidf(point("50.93 11.59"))
    head, tail = second.index("<tuple"), second.index("</tuple>") + len("</tuple>")
    two_tuples = first.replace("</presence>", second[head:tail].replace('id="t1"', 'id="t2"') + "</presence>")
    found = parse_pidf_lo(two_tuples)
    assert found.position == Position(50.93, 11.59, 0.0, "Point")
    assert found.problems == ("Circle: pos is not numeric",)
    two_infos = tuple_pidf(circle("x y", "5")).replace(
        "</gp:location-info>", f"</gp:location-info><gp:location-info>{point('50.93 11.59')}</gp:location-info>"
    )
    assert parse_pidf_lo(two_infos).position == Position(50.93, 11.59, 0.0, "Point")


def test_when_nothing_is_usable_every_reason_is_given() -> None:
    with pytest.raises(LocationError) as refused:
        parse_pidf_lo(tuple_pidf(circle("50.9 999", "5") + arcband(inner="9999")))
    assert "Circle: pos outside WGS84 ranges" in str(refused.value)
    assert "ArcBand: ArcBand: innerRadius is larger than outerRadius" in str(refused.value)
    assert "999" not in str(refused.value)


def test_reasons_are_capped() -> None:
    with pytest.raises(LocationError, match=r"; 12 more$"):
        parse_pidf_lo(tuple_pidf(circle("50.9 999", "5") * 20))


CIVIC = """<ca:civicAddress xml:lang="de" xmlns:ca="urn:ietf:params:xml:ns:pidf:geopriv10:civicAddr"
    xmlns:cae="urn:ietf:params:xml:ns:pidf:geopriv10:civicAddr:ext">
  <ca:country>DE</ca:country><ca:A1>Thüringen</ca:A1><ca:A2>Greiz</ca:A2><ca:A3>Ronneburg</ca:A3>
  <ca:A4>Raitzhain</ca:A4><ca:RD>Markt</ca:RD><ca:HNO>1</ca:HNO><ca:HNS>a</ca:HNS><ca:FLR>2</ca:FLR>
  <ca:NAM>Rathaus
     Ronneburg</ca:NAM><ca:PC>07580</ca:PC><cae:STP>Platz</cae:STP><ca:UNKNOWN>x</ca:UNKNOWN>
</ca:civicAddress>"""

CARD_LINES = [
    ("Name", "Rathaus Ronneburg"),
    ("Straße", "Markt"),
    ("Hausnummer", "1a"),
    ("Etage", "2"),
    ("Ort", "07580 Ronneburg"),
    ("Ortsteil", "Raitzhain"),
    ("Kreis", "Greiz"),
    ("Bundesland", "Thüringen"),
    ("Land", "DE"),
]


def test_a_civic_address_is_kept_with_german_labels_for_the_card() -> None:
    found = parse_pidf_lo(tuple_pidf(CIVIC, "Wiremap"))
    assert found.position is None and found.civic is not None
    assert found.civic.municipality == "Ronneburg"
    assert found.civic.lines() == CARD_LINES  # extensions and unknown elements dropped, whitespace collapsed


def test_a_civic_address_as_asterisk_hands_it_over() -> None:
    text = ('lang="de",country="DE",A1="Thüringen",A2="Greiz",A3="Ronneburg",A4="Raitzhain",RD="Markt",HNO="1",'
            'HNS="a",FLR="2",NAM="Rathaus Ronneburg",PC="07580",STP="Platz"')  # fmt: skip
    address = parse_location_profile(text, "Wiremap")
    assert isinstance(address, CivicAddress) and address.lines() == CARD_LINES
    with pytest.raises(LocationError, match="none"):  # parse_location_info wants a shape
        parse_location_info(text)
    assert isinstance(parse_location_profile('shape="Point",crs="2d",pos="50.9 11.5"'), Position)


def test_rfc_4119_a6_is_the_street_and_values_are_cleaned() -> None:
    address = parse_location_profile('country="DE",A3="Gera",A6="Sorge",PRD="",HNO="5",NAM="a\tb' + "x" * 300 + '"')
    assert isinstance(address, CivicAddress)
    assert address.street == "Sorge"
    assert address.get("NAM").startswith("a bx") and len(address.get("NAM")) == 120


def test_a_position_and_a_civic_address_are_both_kept() -> None:
    found = parse_pidf_lo(tuple_pidf(CIVIC + circle("50.9 11.5", "30")))
    assert found.position == Position(50.9, 11.5, 30.0, "Circle")
    assert found.civic is not None and found.civic.municipality == "Ronneburg"


@pytest.mark.parametrize(
    "text",
    ['lang="de"', 'lang="de",STP="Platz"', 'country=""'],
)
def test_a_civic_address_without_known_elements_is_refused(text: str) -> None:
    with pytest.raises(LocationError, match="civic address without any known element"):
        parse_location_profile(text)
