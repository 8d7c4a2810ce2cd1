"""PIDF-LO bodies (RFC 4119, RFC 5491 geoshapes, RFC 5139 civic addresses) of emergency INVITEs.

The body arrives from the network unauthenticated, so it is treated as hostile:
defusedxml refuses DTDs, entities and external references (billion laughs, XXE),
the size is capped, and every number is checked before it is used. Anything
unexpected is refused with a LocationError that says why, never guessed at.
A shape or location-info that cannot be used does not end the search: the next
one is tried, and every reason is kept.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from xml.etree.ElementTree import Element

from defusedxml import ElementTree

from routing.location import (
    MAX_RADIUS_M,
    CivicAddress,
    LocationError,
    Position,
    altitude,
    arcband_radius,
    civic_address,
    polygon_position,
)

MAX_BYTES = 64 * 1024
MAX_PROBLEMS = 8  # reasons kept per document: they go into notes and logs

_PIDF = "{urn:ietf:params:xml:ns:pidf}"
_DM = "{urn:ietf:params:xml:ns:pidf:data-model}"
_GP = "{urn:ietf:params:xml:ns:pidf:geopriv10}"
_CA = "{urn:ietf:params:xml:ns:pidf:geopriv10:civicAddr}"
_GML = "{http://www.opengis.net/gml}"
_GS = "{http://www.opengis.net/pidflo/1.0}"
_METRES = "urn:ogc:def:uom:EPSG::9001"
_ANGLES = ("urn:ogc:def:uom:EPSG::9102", "urn:ogc:def:uom:EPSG::9101")  # degrees, radians
_SRS_3D = "urn:ogc:def:crs:EPSG::4979"
_DIMENSIONS = {"urn:ogc:def:crs:EPSG::4326": 2, _SRS_3D: 3}
# RFC 5491: these shapes exist in 3-D only, ArcBand in 2-D only
_ONLY = {f"{_GS}Sphere": 3, f"{_GS}Ellipsoid": 3, f"{_GS}Prism": 3, f"{_GS}ArcBand": 2}
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


@dataclass(frozen=True, slots=True)
class PidfLocation:
    """What a PIDF-LO says: the first usable shape, the first usable civic address, what was skipped."""

    position: Position | None
    civic: CivicAddress | None
    problems: tuple[str, ...] = ()  # shapes and addresses skipped, and why (never a coordinate)


def parse_pidf_lo(document: bytes | str) -> PidfLocation:
    """The first usable shape and civic address of a PIDF-LO, in document order.

    Shapes: Point, Circle, Ellipse, ArcBand, Polygon; 3-D (EPSG 4979) Point, Polygon, Sphere,
    Ellipsoid, Prism. Each becomes a circle that holds the whole shape (routing.location):
    Ellipse/Ellipsoid the circle of the larger horizontal axis, ArcBand its apex with the outer
    radius, Polygon the circle around its vertices, Prism that of its base, Sphere its
    horizontal circle; 3-D shapes keep their altitude. Raises LocationError, with every
    reason, when the document has neither.
    """
    root = _root(document)
    position: Position | None = None
    civic: CivicAddress | None = None
    problems: list[str] = []
    found_location_info = False
    for geopriv in _geoprivs(root):
        method = _text(geopriv.find(f"{_GP}method"))
        for location_info in geopriv.findall(f"{_GP}location-info"):
            found_location_info = True
            for element in location_info:
                try:
                    if element.tag == f"{_CA}civicAddress":
                        civic = civic or civic_address({_local(child): _text(child) for child in element
                                                        if child.tag.startswith(_CA)})  # fmt: skip
                    elif position is None and element.tag.startswith((_GML, _GS)):
                        position = _shape(element, method)
                except LocationError as exc:
                    problems.append(f"{_local(element)}: {exc}")
    if position is None and civic is None:
        if problems:
            raise LocationError(_joined(problems))
        if found_location_info:
            raise LocationError("location-info carries no supported shape")
        raise LocationError("PIDF-LO carries no location-info")
    return PidfLocation(position, civic, tuple(problems[:MAX_PROBLEMS]))


def parse_pidf(document: bytes | str) -> Position:
    """The position of a PIDF-LO (see parse_pidf_lo); LocationError if it has none."""
    found = parse_pidf_lo(document)
    if found.position is None:
        raise LocationError(_joined(["no shape, only a civic address", *found.problems]))
    return found.position


def _joined(problems: list[str]) -> str:
    more = f"; {len(problems) - MAX_PROBLEMS} more" if len(problems) > MAX_PROBLEMS else ""
    return "; ".join(problems[:MAX_PROBLEMS]) + more


def _root(document: bytes | str) -> Element:
    if not document:
        raise LocationError("PIDF-LO document is empty")
    size = len(document.encode("utf-8", "surrogatepass")) if isinstance(document, str) else len(document)
    if size > MAX_BYTES:
        raise LocationError(f"PIDF-LO document is larger than {MAX_BYTES} bytes")
    try:
        root: Element = ElementTree.fromstring(document, forbid_dtd=True)
    except (ElementTree.ParseError, ValueError) as exc:  # DefusedXmlException and UnicodeError are ValueErrors
        raise LocationError(f"PIDF-LO is not acceptable XML: {type(exc).__name__}") from exc
    if root.tag != f"{_PIDF}presence":
        raise LocationError("not a PIDF document (no pidf:presence root)")
    return root


def _geoprivs(root: Element) -> Iterator[Element]:
    for child in root:
        if child.tag == f"{_PIDF}tuple":
            for status in child.findall(f"{_PIDF}status"):
                yield from status.findall(f"{_GP}geopriv")
        elif child.tag in (f"{_DM}device", f"{_DM}person"):
            yield from child.findall(f"{_GP}geopriv")


def _shape(shape: Element, method: str) -> Position:
    name = _local(shape)
    if shape.tag == f"{_GML}Point":
        lat, lon, height = _centre(shape)
        return Position(lat, lon, 0.0, "Point", method, height)
    if shape.tag in (f"{_GS}Circle", f"{_GS}Sphere"):
        lat, lon, height = _centre(shape)
        return Position(lat, lon, _length(shape, f"{_GS}radius"), name, method, height)
    if shape.tag in (f"{_GS}Ellipse", f"{_GS}Ellipsoid"):
        lat, lon, height = _centre(shape)
        major, minor = _length(shape, f"{_GS}semiMajorAxis"), _length(shape, f"{_GS}semiMinorAxis")
        if shape.tag == f"{_GS}Ellipsoid":
            _length(shape, f"{_GS}verticalAxis")  # checked, not used: the altitude is shown as given
        _angle(shape, f"{_GS}orientation")
        return Position(lat, lon, max(major, minor), name, method, height)
    if shape.tag == f"{_GS}ArcBand":
        lat, lon, height = _centre(shape)
        _angle(shape, f"{_GS}startAngle")
        _angle(shape, f"{_GS}openingAngle")
        radius = arcband_radius(_length(shape, f"{_GS}innerRadius"), _length(shape, f"{_GS}outerRadius"))
        return Position(lat, lon, radius, name, method, height)
    if shape.tag == f"{_GML}Polygon":
        return _polygon(shape, _dimension(shape), method)
    if shape.tag == f"{_GS}Prism":
        base = shape.find(f"{_GS}base/{_GML}Polygon")
        if base is None:
            raise LocationError("Prism without gs:base/gml:Polygon")
        _length(shape, f"{_GS}height")  # checked, not used
        return _polygon(base, _dimension(shape, 3), method, "Prism")
    raise LocationError("shape is not supported")


def _angle(shape: Element, tag: str) -> float:
    """An angle (degrees or radians, RFC 5491): checked; no reduction depends on it."""
    element = shape.find(tag)
    values = _numbers(_text(element), _local(tag))
    if element is None or len(values) != 1:
        raise LocationError(f"{_local(shape)} needs one numeric {_local(tag)}")
    if element.get("uom", _ANGLES[0]) not in _ANGLES:
        raise LocationError(f"{_local(tag)} must be in degrees or radians")
    return values[0]


def _dimension(shape: Element, required: int | None = None) -> int:
    srs = shape.get("srsName", "")
    if srs not in _DIMENSIONS:
        raise LocationError(f"unsupported srsName {srs[:60]!r}")
    dimension = _DIMENSIONS[srs]
    needed = required or _ONLY.get(shape.tag)
    if needed is not None and dimension != needed:
        raise LocationError(f"{_local(shape)} needs srsName {_SRS_3D if needed == 3 else 'EPSG::4326'}")
    return dimension


def _centre(shape: Element) -> tuple[float, float, float | None]:
    points = _points(_text(shape.find(f"{_GML}pos")), _dimension(shape), single=True)
    if len(points) != 1:
        raise LocationError(f"{_local(shape)} needs exactly one gml:pos")
    return points[0]


def _polygon(shape: Element, dimension: int, method: str, name: str = "Polygon") -> Position:
    ring = shape.find(f"{_GML}exterior/{_GML}LinearRing")
    if ring is None:
        raise LocationError(f"{name} without gml:exterior/gml:LinearRing")
    pos_list = ring.find(f"{_GML}posList")
    if pos_list is not None:
        points = _points(_text(pos_list), dimension)
    else:
        points = [point for pos in ring.findall(f"{_GML}pos") for point in _points(_text(pos), dimension)]
    return polygon_position(points, method, name)


def _points(text: str, dimension: int, single: bool = False) -> list[tuple[float, float, float | None]]:
    """``single``: a shape's one centre pos, whose third number in 2-D is ignored (routing.location._points)."""
    values = _numbers(text, "pos")
    if single and dimension == 2 and len(values) == 3:
        values = values[:2]
    if not values or len(values) % dimension:
        raise LocationError(f"pos must hold {dimension} numbers per point ({len(values)} given)")
    points = []
    for i in range(0, len(values), dimension):
        lat, lon = values[i], values[i + 1]
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):
            raise LocationError("pos outside WGS84 ranges")
        points.append((lat, lon, altitude(values[i + 2]) if dimension == 3 else None))
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
        raise LocationError(f"{what} is not numeric")  # never the text: it may be a position
    values = [float(word) for word in words]
    if not all(math.isfinite(value) for value in values):  # "1e999" overflows to inf
        raise LocationError(f"{what} is not finite")
    return values


def _text(element: Element | None) -> str:
    return (element.text or "").strip() if element is not None else ""


def _local(tag: Element | str) -> str:
    name = tag.tag if isinstance(tag, Element) else tag
    return name.rpartition("}")[2]
