"""Caller locations as the dialplan hands them over.

Asterisk's res_geolocation turns the PIDF-LO of the INVITE into
``GEOLOC_PROFILE(location_info)``, a list like
``shape="Circle",crs="2d",pos="50.9272 11.5864",radius="15"``; 3-D shapes
(``crs="3d"``, EPSG 4979) carry the altitude as a third number of each ``pos``.
A civic address (RFC 4119/5139, GEOLOC_PROFILE(format) ``civicAddress``) arrives as
its elements: ``lang="de",country="DE",A1="Thüringen",A3="Gera",RD="Schloßstraße"``.
The value comes from the network unfiltered, so it is parsed strictly: anything
unexpected is rejected with a reason, never guessed at. A reason never quotes
the coordinates: it is logged and shown, and positions are personal data.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

_PAIR = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_-]*)\s*=\s*"([^"]*)"\s*(?:,|$)')
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


def _points(text: str, dimension: int, single: bool = False) -> list[tuple[float, float, float | None]]:
    """lat lon (2-D) or lat lon altitude (3-D) triples; the reason never quotes them.

    ``single``: the one pos of a shape's centre. A third number in a 2-D (EPSG 4326) pos is
    ignored there: DEC112's library writes the altitude whenever it knows it, and lat/lon are
    unambiguous. A posList stays strict: with a stray number every later vertex would shift.
    """
    words = text.split()
    if single and dimension == 2 and len(words) == 3:
        words = words[:2] if _numeric(words[2]) else words
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


def _numeric(word: str) -> bool:
    try:
        return math.isfinite(float(word))
    except ValueError:
        return False


def _point(fields: dict[str, str], dimension: int) -> tuple[float, float, float | None]:
    points = _points(fields.get("pos", ""), dimension, single=True)
    if len(points) != 1:
        raise LocationError("pos must hold exactly one point")
    return points[0]


def _angle(fields: dict[str, str], name: str, shape: str) -> float:
    """An angle as Asterisk writes it ("20 radians"): checked, never used for the circle.

    Asterisk 22's pidf_to_eprofile.xslt labels EPSG::9102 (degrees) "radians" and every other
    unit "degrees", so the word cannot be trusted; no reduction here depends on it.
    """
    words = fields.get(name.lower(), "").split()
    if not 1 <= len(words) <= 2 or not _numeric(words[0]) or (len(words) == 2 and words[1] not in _ANGLE_UNITS):
        raise LocationError(f"{shape} without a valid {name}")
    return float(words[0])


_ANGLE_UNITS = ("radians", "degrees")


def arcband_radius(inner: float, outer: float, shape: str = "ArcBand") -> float:
    """The conservative circle of an ArcBand (RFC 5491 5.2.6): its apex with the outer radius.

    The band lies wholly inside that circle whatever its angles, which is why it is chosen:
    the smallest circle around the band would be tighter for a narrow sector, but it depends on
    the angles' units, and the live path (GEOLOC_PROFILE) cannot be trusted with those (see
    _angle). Coarse, but never excludes the caller: it is the reach of the cell sector.
    """
    if inner > outer:
        raise LocationError(f"{shape}: innerRadius is larger than outerRadius")
    return outer


# shape -> the crs values it comes in (RFC 5491: Sphere, Ellipsoid and Prism are 3-D only, ArcBand 2-D only)
_SHAPES = {
    "Point": ("2d", "3d"),
    "Circle": ("2d",),
    "Ellipse": ("2d",),
    "ArcBand": ("2d",),
    "Polygon": ("2d", "3d"),
    "Sphere": ("3d",),
    "Ellipsoid": ("3d",),
    "Prism": ("3d",),
}


def _fields(text: str) -> dict[str, str]:
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
    return fields


def parse_location_info(text: str, method: str = "") -> Position:
    """A shape of GEOLOC_PROFILE(location_info): Point, Circle, Ellipse, ArcBand, Polygon; 3-D Sphere, Ellipsoid, Prism.

    Each becomes a circle that holds the whole shape: an Ellipse (Ellipsoid) the circle of its
    larger horizontal axis, an ArcBand its apex with the outer radius, a Polygon (a Prism's
    base) the circle around its vertices, a Sphere its horizontal circle. 3-D shapes keep
    their altitude (a Polygon's or Prism's: the mean of its vertices').
    """
    return _geodetic(_fields(text), method)


def parse_location_profile(text: str, method: str = "") -> Position | CivicAddress:
    """GEOLOC_PROFILE(location_info) of either format: a shape (GML) or a civic address."""
    fields = _fields(text)
    if "shape" in fields:
        return _geodetic(fields, method)
    return civic_address(fields)


def _geodetic(fields: dict[str, str], method: str) -> Position:
    shape, crs = fields.get("shape", ""), fields.get("crs", "2d")
    if crs not in ("2d", "3d"):
        raise LocationError(f"unsupported crs {crs[:8]!r}")
    if shape not in _SHAPES:
        raise LocationError(f"shape {shape[:20] or '(none)'!r} is not supported")
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
    elif shape == "ArcBand":
        _angle(fields, "startAngle", shape)
        _angle(fields, "openingAngle", shape)
        radius = arcband_radius(_length(fields, "innerRadius", shape), _length(fields, "outerRadius", shape))
    else:  # Ellipse, Ellipsoid: the larger horizontal axis
        radius = max(_length(fields, "semiMajorAxis", shape), _length(fields, "semiMinorAxis", shape))
    return Position(lat, lon, radius, shape, method, height)


# Civic address elements (RFC 4119, RFC 5139) kept, with their German label on the card, in the
# order a German address is read. A6 is the street in RFC 4119, RD in RFC 5139.
CIVIC_LABELS: dict[str, str] = {
    "NAM": "Name",
    "street": "Straße",
    "house_number": "Hausnummer",
    "BLD": "Gebäude",
    "UNIT": "Einheit",
    "FLR": "Etage",
    "ROOM": "Raum",
    "SEAT": "Platz",
    "LOC": "Hinweis",
    "LMK": "Orientierungspunkt",
    "place": "Ort",
    "A4": "Ortsteil",
    "A5": "Viertel",
    "A2": "Kreis",
    "A1": "Bundesland",
    "country": "Land",
    "POBOX": "Postfach",
}
_STREET_PARTS = ("PRD", "RD", "STS", "POD")
_CIVIC_CODES = ("country", "A1", "A2", "A3", "A4", "A5", "A6", *_STREET_PARTS, "HNO", "HNS", "LMK", "LOC", "FLR",
                "NAM", "PC", "BLD", "UNIT", "ROOM", "SEAT", "POBOX")  # fmt: skip
_CIVIC_BY_KEY = {code.lower(): code for code in _CIVIC_CODES}
MAX_CIVIC_VALUE = 120
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class CivicAddress:
    """A civic address (RFC 4119/5139): the elements given, by their RFC code ("A3", "RD", "HNO", ...).

    Values are cleaned (control characters dropped, whitespace collapsed, capped); unknown
    elements and extensions (RFC 6848) are dropped. An address is personal data: DEBUG only.
    """

    elements: tuple[tuple[str, str], ...]

    def get(self, code: str) -> str:
        return next((value for key, value in self.elements if key == code), "")

    @property
    def municipality(self) -> str:
        """A3: the city, town or Gemeinde (RFC 5139)."""
        return self.get("A3")

    @property
    def street(self) -> str:
        parts = [self.get(code) for code in _STREET_PARTS]
        if not parts[1]:
            parts[1] = self.get("A6")  # RFC 4119's street
        return " ".join(part for part in parts if part)

    def lines(self) -> list[tuple[str, str]]:
        """(German label, value) for the dispatcher's card, in reading order."""
        derived = {
            "street": self.street,
            "house_number": self.get("HNO") + self.get("HNS"),  # 12 + a: "12a"
            "place": (self.get("PC") + " " + self.municipality).strip(),
        }
        return [(label, value) for key, label in CIVIC_LABELS.items() if (value := derived.get(key) or self.get(key))]


def civic_address(elements: Mapping[str, str]) -> CivicAddress:
    """The known civic elements of a mapping (keys case-insensitive); LocationError if none is given."""
    kept: dict[str, str] = {}
    for key, raw in elements.items():
        code = _CIVIC_BY_KEY.get(key.lower())
        value = " ".join(_CONTROL.sub(" ", raw).split())[:MAX_CIVIC_VALUE]
        if code is not None and value:
            kept.setdefault(code, value)
    if not kept:
        raise LocationError("civic address without any known element")
    return CivicAddress(tuple(sorted(kept.items(), key=lambda item: _CIVIC_CODES.index(item[0]))))


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
