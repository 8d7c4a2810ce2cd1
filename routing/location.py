"""Caller locations as the dialplan hands them over.

Asterisk's res_geolocation turns the PIDF-LO of the INVITE into
``GEOLOC_PROFILE(location_info)``, a list like
``shape="Circle",crs="2d",pos="50.9272 11.5864",radius="15"``. The value comes
from the network unfiltered, so it is parsed strictly: anything unexpected is
rejected with a reason, never guessed at.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

_PAIR = re.compile(r'\s*([A-Za-z_]+)\s*=\s*"([^"]*)"\s*(?:,|$)')
MAX_LENGTH = 1024


class LocationError(ValueError):
    """The location could not be used; the message says why."""


@dataclass(frozen=True, slots=True)
class Position:
    """A WGS84 position with its uncertainty radius (metres; 0 for a bare point)."""

    lat: float
    lon: float
    radius_m: float
    shape: str
    method: str = ""


EARTH_RADIUS_M = 6_371_008.8
MAX_RADIUS_M = 1_000_000.0


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Haversine great-circle distance."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    a = (
        math.sin((phi2 - phi1) / 2) ** 2
        + math.cos(phi1) * math.cos(phi2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    )
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(min(1.0, a)))


def polygon_position(points: list[tuple[float, float]], method: str = "") -> Position:
    """A polygon as the circle around its vertices: centre = their mean, radius = farthest vertex."""
    vertices = list(dict.fromkeys(points))
    if len(vertices) < 3:
        raise LocationError(f"Polygon needs at least 3 distinct vertices, has {len(vertices)}")
    lat = sum(vertex[0] for vertex in vertices) / len(vertices)
    lon = sum(vertex[1] for vertex in vertices) / len(vertices)
    radius = max(distance_m(lat, lon, *vertex) for vertex in vertices)
    if radius > MAX_RADIUS_M:  # also catches polygons across the antimeridian, whose averaged centre is far off
        raise LocationError(f"Polygon is too large: {radius:.0f} m from centre to a vertex")
    return Position(lat, lon, radius, "Polygon", method)


def _length(fields: dict[str, str], name: str, shape: str) -> float:
    text = fields.get(name.lower(), "").split()
    try:
        value = float(text[0]) if len(text) == 1 else math.nan
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not 0 <= value <= MAX_RADIUS_M:
        raise LocationError(f"{shape} without a valid {name} (metres)")
    return value


def _coordinate_pair(text: str) -> tuple[float, float]:
    parts = text.split()
    if len(parts) != 2:
        raise LocationError(f"pos must be 'lat lon', got {text[:40]!r}")
    try:
        lat, lon = float(parts[0]), float(parts[1])
    except ValueError as exc:
        raise LocationError(f"pos is not numeric: {text[:40]!r}") from exc
    if not (math.isfinite(lat) and math.isfinite(lon)) or not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise LocationError(f"pos outside WGS84 ranges: {lat} {lon}")
    return lat, lon


def parse_location_info(text: str, method: str = "") -> Position:
    """Point, Circle, Ellipse and Polygon shapes of GEOLOC_PROFILE(location_info).

    An Ellipse becomes the circle of its larger axis, a Polygon the circle around its vertices.
    """
    if not text or len(text) > MAX_LENGTH:
        raise LocationError("location_info is empty or too long")
    fields: dict[str, str] = {}
    position = 0
    while position < len(text):
        match = _PAIR.match(text, position)
        if match is None:
            raise LocationError(f'location_info is not a key="value" list near {text[position : position + 30]!r}')
        fields[match[1].lower()] = match[2]
        position = match.end()
    shape = fields.get("shape", "")
    if fields.get("crs", "2d") not in ("2d", "3d"):
        raise LocationError(f"unsupported crs {fields.get('crs')!r}")
    if shape == "Point":
        lat, lon = _coordinate_pair(fields.get("pos", ""))
        return Position(lat, lon, 0.0, shape, method)
    if shape == "Circle":
        lat, lon = _coordinate_pair(fields.get("pos", ""))
        try:
            radius = float(fields.get("radius", ""))
        except ValueError as exc:
            raise LocationError("Circle without a numeric radius") from exc
        if not math.isfinite(radius) or not 0 <= radius <= MAX_RADIUS_M:
            raise LocationError(f"radius out of range: {radius}")
        return Position(lat, lon, radius, shape, method)
    if shape == "Ellipse":
        lat, lon = _coordinate_pair(fields.get("pos", ""))
        axis = max(_length(fields, "semiMajorAxis", shape), _length(fields, "semiMinorAxis", shape))
        return Position(lat, lon, axis, shape, method)
    if shape == "Polygon":
        words = fields.get("poslist", "").split()
        if not words or len(words) % 2:
            raise LocationError("Polygon posList must hold lat lon pairs")
        points = [_coordinate_pair(f"{words[i]} {words[i + 1]}") for i in range(0, len(words), 2)]
        return polygon_position(points, method)
    raise LocationError(f"shape {shape or '(none)'!r} is not supported yet")


_CELL_PARAMETERS = ("utran-cell-id-3gpp", "e-utran-cell-id-3gpp", "cgi-3gpp", "nrcgi")
_CELL_ID = re.compile(r"^[0-9A-Fa-f]{5,40}$")


def parse_access_network_info(header: str) -> str:
    """The cell id from a P-Access-Network-Info header (RFC 7315), upper case.

    '3GPP-E-UTRAN-FDD; utran-cell-id-3gpp=2620100A1B2C3D4E' -> '2620100A1B2C3D4E'
    """
    if not header or len(header) > 512:
        raise LocationError("P-Access-Network-Info is empty or too long")
    for part in header.split(";")[1:]:
        name, _, value = part.strip().partition("=")
        if name.strip().lower() in _CELL_PARAMETERS:
            value = value.strip().strip('"')
            if not _CELL_ID.match(value):
                raise LocationError(f"cell id is not hexadecimal: {value[:24]!r}")
            return value.upper()
    raise LocationError("P-Access-Network-Info carries no cell id")
