"""PIDF-LO bodies (RFC 4119, RFC 5491 geoshapes) of emergency INVITEs as a Position.

The body arrives from the network unauthenticated, so it is treated as hostile:
defusedxml refuses DTDs, entities and external references (billion laughs, XXE),
the size is capped, and every number is checked before it is used. Anything
unexpected is refused with a LocationError that says why, never guessed at.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from xml.etree.ElementTree import Element

from defusedxml import ElementTree

from routing.location import MAX_RADIUS_M, LocationError, Position, polygon_position

MAX_BYTES = 64 * 1024

_PIDF = "{urn:ietf:params:xml:ns:pidf}"
_DM = "{urn:ietf:params:xml:ns:pidf:data-model}"
_GP = "{urn:ietf:params:xml:ns:pidf:geopriv10}"
_GML = "{http://www.opengis.net/gml}"
_GS = "{http://www.opengis.net/pidflo/1.0}"
_METRES = "urn:ogc:def:uom:EPSG::9001"
_DIMENSIONS = {"urn:ogc:def:crs:EPSG::4326": 2, "urn:ogc:def:crs:EPSG::4979": 3}
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def parse_pidf(document: bytes | str) -> Position:
    """The first supported shape (Point, Circle, Ellipse, Polygon) of a PIDF-LO document.

    Ellipses and polygons become a conservative circle around their centre.
    """
    if not document:
        raise LocationError("PIDF-LO document is empty")
    size = len(document.encode("utf-8", "surrogatepass")) if isinstance(document, str) else len(document)
    if size > MAX_BYTES:
        raise LocationError(f"PIDF-LO document is larger than {MAX_BYTES} bytes")
    try:
        root = ElementTree.fromstring(document, forbid_dtd=True)
    except (ElementTree.ParseError, ValueError) as exc:  # DefusedXmlException and UnicodeError are ValueErrors
        raise LocationError(f"PIDF-LO is not acceptable XML: {type(exc).__name__}") from exc
    if root.tag != f"{_PIDF}presence":
        raise LocationError("not a PIDF document (no pidf:presence root)")
    found_location_info = False
    for geopriv in _geoprivs(root):
        for location_info in geopriv.findall(f"{_GP}location-info"):
            found_location_info = True
            for shape in location_info:
                position = _shape(shape, _text(geopriv.find(f"{_GP}method")))
                if position is not None:
                    return position
    if found_location_info:
        raise LocationError("location-info carries no supported shape")
    raise LocationError("PIDF-LO carries no location-info")


def _geoprivs(root: Element) -> Iterator[Element]:
    for child in root:
        if child.tag == f"{_PIDF}tuple":
            for status in child.findall(f"{_PIDF}status"):
                yield from status.findall(f"{_GP}geopriv")
        elif child.tag in (f"{_DM}device", f"{_DM}person"):
            yield from child.findall(f"{_GP}geopriv")


def _shape(shape: Element, method: str) -> Position | None:
    if shape.tag == f"{_GML}Point":
        lat, lon = _centre(shape)
        return Position(lat, lon, 0.0, "Point", method)
    if shape.tag == f"{_GS}Circle":
        lat, lon = _centre(shape)
        return Position(lat, lon, _length(shape, f"{_GS}radius"), "Circle", method)
    if shape.tag == f"{_GS}Ellipse":
        lat, lon = _centre(shape)
        major, minor = _length(shape, f"{_GS}semiMajorAxis"), _length(shape, f"{_GS}semiMinorAxis")
        orientation = _numbers(_text(shape.find(f"{_GS}orientation")), "orientation")
        if len(orientation) != 1:
            raise LocationError("Ellipse needs one numeric orientation")
        return Position(lat, lon, max(major, minor), "Ellipse", method)
    if shape.tag == f"{_GML}Polygon":
        return _polygon(shape, method)
    return None


def _dimension(shape: Element) -> int:
    srs = shape.get("srsName", "")
    if srs not in _DIMENSIONS:
        raise LocationError(f"unsupported srsName {srs[:60]!r}")
    return _DIMENSIONS[srs]


def _centre(shape: Element) -> tuple[float, float]:
    points = _points(_text(shape.find(f"{_GML}pos")), _dimension(shape))
    if len(points) != 1:
        raise LocationError(f"{_local(shape)} needs exactly one gml:pos")
    return points[0]


def _polygon(shape: Element, method: str) -> Position:
    dimension = _dimension(shape)
    ring = shape.find(f"{_GML}exterior/{_GML}LinearRing")
    if ring is None:
        raise LocationError("Polygon without gml:exterior/gml:LinearRing")
    pos_list = ring.find(f"{_GML}posList")
    if pos_list is not None:
        points = _points(_text(pos_list), dimension)
    else:
        points = [point for pos in ring.findall(f"{_GML}pos") for point in _points(_text(pos), dimension)]
    return polygon_position(points, method)


def _points(text: str, dimension: int) -> list[tuple[float, float]]:
    values = _numbers(text, "pos")
    if not values or len(values) % dimension:
        raise LocationError(f"pos must hold {dimension} numbers per point, got {text[:40]!r}")
    points = [(values[i], values[i + 1]) for i in range(0, len(values), dimension)]
    if not all(-90 <= lat <= 90 and -180 <= lon <= 180 for lat, lon in points):
        raise LocationError(f"pos outside WGS84 ranges: {text[:40]!r}")
    return points


def _length(shape: Element, tag: str) -> float:
    element = shape.find(tag)
    values = _numbers(_text(element), _local(tag))
    if element is None or len(values) != 1:
        raise LocationError(f"{_local(shape)} needs one numeric {_local(tag)}")
    if element.get("uom") != _METRES:
        raise LocationError(f"{_local(tag)} must be in metres ({_METRES})")
    if not 0 <= values[0] <= MAX_RADIUS_M:
        raise LocationError(f"{_local(tag)} out of range: {values[0]}")
    return values[0]


def _numbers(text: str, what: str) -> list[float]:
    words = text.split()
    if not all(_NUMBER.fullmatch(word) for word in words):
        raise LocationError(f"{what} is not numeric: {text[:40]!r}")
    values = [float(word) for word in words]
    if not all(math.isfinite(value) for value in values):  # "1e999" overflows to inf
        raise LocationError(f"{what} is not finite: {text[:40]!r}")
    return values


def _text(element: Element | None) -> str:
    return (element.text or "").strip() if element is not None else ""


def _local(tag: Element | str) -> str:
    name = tag.tag if isinstance(tag, Element) else tag
    return name.rpartition("}")[2]
