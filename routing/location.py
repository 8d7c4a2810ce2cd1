"""Caller locations as the dialplan hands them over.

Asterisk's res_geolocation turns the PIDF-LO of the INVITE into
``GEOLOC_PROFILE(location_info)``, a list like
``shape="Circle",crs="2d",pos="50.9272 11.5864",radius="15"``; 3-D shapes
(``crs="3d"``, EPSG 4979) carry the altitude as a third number of each ``pos``.
The value comes from the network unfiltered, so it is parsed strictly: anything
unexpected is rejected with a reason, never guessed at. A reason never quotes
the coordinates: it is logged and shown, and positions are personal data.
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
    """A WGS84 position with its uncertainty radius (metres; 0 for a bare point).

    ``altitude_m``: metres above the WGS84 ellipsoid when the source gave one (3-D shapes);
    shown to the dispatcher, never used for routing.
    """

    lat: float
    lon: float
    radius_m: float
    shape: str
    method: str = ""
    altitude_m: float | None = None


EARTH_RADIUS_M = 6_371_008.8
MAX_RADIUS_M = 1_000_000.0
# deeper than any mine, higher than any aircraft with a telephone on board
MIN_ALTITUDE_M, MAX_ALTITUDE_M = -12_000.0, 20_000.0


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Haversine great-circle distance."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    a = (
        math.sin((phi2 - phi1) / 2) ** 2
        + math.cos(phi1) * math.cos(phi2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    )
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(min(1.0, a)))


def polygon_position(
    points: list[tuple[float, float, float | None]], method: str = "", shape: str = "Polygon"
) -> Position:
    """A polygon as the circle around its vertices: centre = their mean, radius = farthest vertex.

    Vertices are (lat, lon, altitude or None); the altitude is the mean of the vertices that have one.
    """
    distinct: dict[tuple[float, float], tuple[float, float, float | None]] = {}
    for lat, lon, height in points:
        distinct.setdefault((lat, lon), (lat, lon, height))
    vertices = list(distinct.values())
    if len(vertices) < 3:
        raise LocationError(f"{shape} needs at least 3 distinct vertices, has {len(vertices)}")
    lat = sum(vertex[0] for vertex in vertices) / len(vertices)
    lon = sum(vertex[1] for vertex in vertices) / len(vertices)
    radius = max(distance_m(lat, lon, v_lat, v_lon) for v_lat, v_lon, _ in vertices)
    if radius > MAX_RADIUS_M:  # also catches polygons across the antimeridian, whose averaged centre is far off
        raise LocationError(f"{shape} is too large: {radius:.0f} m from centre to a vertex")
    heights = [height for _, _, height in vertices if height is not None]
    return Position(lat, lon, radius, shape, method, sum(heights) / len(heights) if heights else None)


def altitude(value: float) -> float:
    """An altitude in metres, checked (LocationError, without the value, if absurd)."""
    if not math.isfinite(value) or not MIN_ALTITUDE_M <= value <= MAX_ALTITUDE_M:
        raise LocationError(f"altitude outside {MIN_ALTITUDE_M:.0f}..{MAX_ALTITUDE_M:.0f} m")
    return value


def _length(fields: dict[str, str], name: str, shape: str) -> float:
    text = fields.get(name.lower(), "").split()
    try:
        value = float(text[0]) if len(text) == 1 else math.nan
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not 0 <= value <= MAX_RADIUS_M:
        raise LocationError(f"{shape} without a valid {name} (metres)")
    return value


def _points(text: str, dimension: int) -> list[tuple[float, float, float | None]]:
    """lat lon (2-D) or lat lon altitude (3-D) triples; the reason never quotes them."""
    words = text.split()
    if not words or len(words) % dimension:
        what = "'lat lon'" if dimension == 2 else "'lat lon altitude'"
        raise LocationError(f"pos must be {what} ({len(words)} values given)")
    try:
        values = [float(word) for word in words]
    except ValueError:
        raise LocationError("pos is not numeric") from None
    points = []
    for i in range(0, len(values), dimension):
        lat, lon = values[i], values[i + 1]
        if not (math.isfinite(lat) and math.isfinite(lon)) or not (-90 <= lat <= 90 and -180 <= lon <= 180):
            raise LocationError("pos outside WGS84 ranges")
        points.append((lat, lon, altitude(values[i + 2]) if dimension == 3 else None))
    return points


def _point(fields: dict[str, str], dimension: int) -> tuple[float, float, float | None]:
    points = _points(fields.get("pos", ""), dimension)
    if len(points) != 1:
        raise LocationError("pos must hold exactly one point")
    return points[0]


# shape -> the crs values it comes in (RFC 5491: Sphere, Ellipsoid and Prism are 3-D only)
_SHAPES = {
    "Point": ("2d", "3d"),
    "Circle": ("2d",),
    "Ellipse": ("2d",),
    "Polygon": ("2d", "3d"),
    "Sphere": ("3d",),
    "Ellipsoid": ("3d",),
    "Prism": ("3d",),
}


def parse_location_info(text: str, method: str = "") -> Position:
    """Point, Circle, Ellipse, Polygon, and the 3-D Sphere, Ellipsoid and Prism of GEOLOC_PROFILE(location_info).

    An Ellipse (Ellipsoid) becomes the circle of its larger horizontal axis, a Polygon (a
    Prism's base) the circle around its vertices, a Sphere its circle. 3-D shapes keep their
    altitude (a Polygon's or Prism's: the mean of its vertices').
    """
    if not text or len(text) > MAX_LENGTH:
        raise LocationError("location_info is empty or too long")
    fields: dict[str, str] = {}
    position = 0
    while position < len(text):
        match = _PAIR.match(text, position)
        if match is None:
            raise LocationError('location_info is not a key="value" list')
        fields[match[1].lower()] = match[2]
        position = match.end()
    shape, crs = fields.get("shape", ""), fields.get("crs", "2d")
    if crs not in ("2d", "3d"):
        raise LocationError(f"unsupported crs {crs[:8]!r}")
    if shape not in _SHAPES:
        raise LocationError(f"shape {shape[:20] or '(none)'!r} is not supported yet")
    if crs not in _SHAPES[shape]:
        raise LocationError(f"{shape} does not come with crs {crs!r}")
    dimension = 3 if crs == "3d" else 2
    if shape in ("Polygon", "Prism"):
        return polygon_position(_points(fields.get("poslist", ""), dimension), method, shape)
    lat, lon, height = _point(fields, dimension)
    if shape == "Point":
        radius = 0.0
    elif shape in ("Circle", "Sphere"):
        radius = _length(fields, "radius", shape)
    else:  # Ellipse, Ellipsoid: the larger horizontal axis
        radius = max(_length(fields, "semiMajorAxis", shape), _length(fields, "semiMinorAxis", shape))
    return Position(lat, lon, radius, shape, method, height)


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
                raise LocationError("cell id is not hexadecimal")  # a cell id locates the caller: not quoted
            return value.upper()
    raise LocationError("P-Access-Network-Info carries no cell id")
