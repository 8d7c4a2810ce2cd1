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
    """Point and Circle shapes of GEOLOC_PROFILE(location_info)."""
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
        if not math.isfinite(radius) or not 0 <= radius <= 1_000_000:
            raise LocationError(f"radius out of range: {radius}")
        return Position(lat, lon, radius, shape, method)
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
