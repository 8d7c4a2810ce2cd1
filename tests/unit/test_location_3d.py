"""3-D locations (crs="3d", EPSG 4979): routed by lat/lon, the altitude kept for the dispatcher's card.

The inputs are the public peers' conformance vectors (tests/support/conformance/, a copy of
the shared folder): every vector in 3-D, as a PIDF-LO document (routing.pidf, simulations)
and as the GEOLOC_PROFILE(location_info) string live calls take (routing.location).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from routing.location import LocationError, Position, parse_location_info
from routing.pidf import parse_pidf

VECTORS = json.loads((Path(__file__).parents[1] / "support/conformance/location-vectors.json").read_text())["vectors"]


def three_d(vector: dict[str, Any]) -> bool:
    given = json.dumps(vector["input"])
    return vector["kind"] in ("pidf", "location_info") and ("EPSG::4979" in given or 'crs=\\"3d\\"' in given)


THREE_D = [pytest.param(vector, id=vector["id"]) for vector in VECTORS if three_d(vector)]


def altitudes(vector: dict[str, Any]) -> list[float]:
    """The altitudes the vector's positions carry (third number of each pos)."""
    text = vector["input"].get("document") or vector["input"]["text"]
    if "document" in vector["input"]:
        lists = re.findall(r"<gml:(?:pos|posList)>(.*?)</gml:(?:pos|posList)>", text, re.S)
    else:
        lists = [value for key, value in _fields(text).items() if key in ("pos", "poslist")]
    numbers = [float(word) for words in lists for word in re.sub(r"<!--.*?-->", " ", words).split()]
    return numbers[2::3]


def _fields(text: str) -> dict[str, str]:
    return {key.lower(): value for key, value in re.findall(r'(\w+)="([^"]*)"', text)}


def parse(vector: dict[str, Any]) -> Position:
    given = vector["input"]
    if vector["kind"] == "pidf":
        return parse_pidf(given["document"])
    return parse_location_info(given["text"], given.get("method", ""))


def test_the_vectors_hold_3d_shapes_of_both_kinds() -> None:
    kinds = {vector.values[0]["kind"] for vector in THREE_D}
    assert kinds == {"pidf", "location_info"} and len(THREE_D) >= 9


@pytest.mark.parametrize("vector", THREE_D)
def test_a_3d_vector_is_accepted_with_its_position_and_altitude(vector: dict[str, Any]) -> None:
    expect = vector["expect"]
    assert expect["outcome"] == "position"
    position = parse(vector)
    if "polygon" in expect:  # a Prism: the circle around its base
        corners = expect["polygon"]
        assert position.lat == pytest.approx(sum(c[0] for c in corners) / len(corners))
        assert position.lon == pytest.approx(sum(c[1] for c in corners) / len(corners))
    else:
        assert (position.lat, position.lon) == pytest.approx((expect["lat"], expect["lon"]))
    if "radius" in expect:
        assert position.radius_m == pytest.approx(expect["radius"])
    if "radius_min" in expect:
        assert position.radius_m >= expect["radius_min"] - 1e-6
    heights = altitudes(vector)
    assert position.altitude_m == pytest.approx(sum(heights) / len(heights))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('shape="Point",crs="3d",pos="50.9272 11.5864 231.5"', Position(50.9272, 11.5864, 0.0, "Point", "", 231.5)),
        (
            'shape="Sphere",crs="3d",pos="50.9272 11.5864 312",radius="20"',
            Position(50.9272, 11.5864, 20.0, "Sphere", "", 312.0),
        ),
        (
            'shape="Ellipsoid",crs="3d",pos="50.65 12.2 -3.5",semiMajorAxis="15",semiMinorAxis="40",'
            'verticalAxis="3",orientation="0 radians"',
            Position(50.65, 12.2, 40.0, "Ellipsoid", "", -3.5),
        ),
        (
            'shape="Prism",crs="3d",posList="50.92 11.58 200 50.93 11.58 210 50.93 11.60 220 50.92 11.58 200",'
            'height="3"',
            None,
        ),
    ],
)
def test_3d_location_info_as_asterisk_writes_it(text: str, expected: Position | None) -> None:
    position = parse_location_info(text)
    if expected is None:
        assert (position.shape, position.altitude_m) == ("Prism", pytest.approx(210.0))
    else:
        assert position == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('shape="Point",crs="3d",pos="50.9272 11.5864"', "'lat lon altitude'"),  # the altitude missing
        ('shape="Point",crs="2d",pos="50.9272 11.5864 231.5 7 1"', "'lat lon'"),  # 5 numbers for 2-D
        ('shape="Point",crs="3d",pos="50.9272 11.5864 99999"', "altitude"),
        ('shape="Point",crs="3d",pos="50.9272 11.5864 nan"', "altitude"),
        ('shape="Sphere",crs="2d",pos="50.9272 11.5864",radius="20"', "crs"),
        ('shape="Circle",crs="3d",pos="50.9272 11.5864 231.5",radius="20"', "crs"),
        ('shape="Sphere",crs="3d",pos="50.9272 11.5864 231.5"', "radius"),
    ],
)
def test_broken_3d_location_info_is_refused_without_quoting_the_position(text: str, reason: str) -> None:
    with pytest.raises(LocationError, match=reason) as refused:
        parse_location_info(text)
    for coordinate in ("50.92", "11.58", "231.5", "99999"):
        assert coordinate not in str(refused.value)
