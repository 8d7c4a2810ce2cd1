"""GEOLOC_PROFILE(location_info) parsing: strict, with a reason for every refusal."""

from __future__ import annotations

import pytest

from routing.location import LocationError, Position, parse_location_info


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('shape="Circle",crs="2d",pos="50.9272 11.5864",radius="15"', Position(50.9272, 11.5864, 15.0, "Circle")),
        ('shape="Point",crs="2d",pos="50.8786 12.0824"', Position(50.8786, 12.0824, 0.0, "Point")),
        ('shape="Circle", crs="2d", pos="-33.5 151.25", radius="0"', Position(-33.5, 151.25, 0.0, "Circle")),
        # as Asterisk 22 writes them (measured in the lab)
        (
            'shape="Ellipse",crs="2d",pos="50.9 11.5",semiMajorAxis="30",semiMinorAxis="10",orientation="45 degrees"',
            Position(50.9, 11.5, 30.0, "Ellipse"),
        ),
    ],
)
def test_supported_shapes(text: str, expected: Position) -> None:
    assert parse_location_info(text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("x" * 2000, "too long"),
        ('shape="Circle",crs="2d",pos="91 11",radius="5"', "WGS84"),
        ('shape="Circle",crs="2d",pos="50.9 181",radius="5"', "WGS84"),
        ('shape="Circle",crs="2d",pos="50.9 nan",radius="5"', "WGS84"),
        ('shape="Circle",crs="2d",pos="50.9",radius="5"', "lat lon"),
        ('shape="Circle",crs="2d",pos="a b",radius="5"', "numeric"),
        ('shape="Circle",crs="2d",pos="50.9 11.5",radius="-1"', "radius"),
        ('shape="Circle",crs="2d",pos="50.9 11.5"', "radius"),
        ('shape="Point",crs="4d",pos="50.9 11.5"', "crs"),
        ('shape="Sphere",pos="50.9 11.5"', "Sphere does not come with crs '2d'"),
        ('shape=Circle,pos="50.9 11.5"', "key="),
        ("<script>alert(1)</script>", "key="),
    ],
)
def test_garbage_is_refused_with_a_reason(text: str, reason: str) -> None:
    with pytest.raises(LocationError, match=reason):
        parse_location_info(text)


def test_polygon_as_asterisk_writes_it() -> None:
    text = 'shape="Polygon",crs="2d",posList="50.92 11.58 50.93 11.58 50.93 11.60 50.92 11.60 50.92 11.58"'
    position = parse_location_info(text, "GPS")
    assert position.shape == "Polygon"
    assert position.lat == pytest.approx(50.925)
    assert position.lon == pytest.approx(11.59)
    assert 800 < position.radius_m < 900  # half the diagonal of a ~1.1 x 1.4 km box
