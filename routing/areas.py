"""Which district a caller is in: district polygons and an uncertainty-aware lookup.

Polygons are the BKG VG5000 districts (© GeoBasis-DE / BKG 2021 (Daten
verändert)), coarse: borders are off by up to ~5 km. A caller's position
comes with an uncertainty radius; when that circle crosses a border the
district is chosen by the larger share of the circle, and the answer says
it is uncertain. shapely does the geometry (an STRtree over the polygons).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import shapely
from shapely import affinity
from shapely.geometry import Point, shape
from shapely.geometry.base import BaseGeometry
from shapely.strtree import STRtree

METRES_PER_DEGREE_LAT = 111_320.0
# A circle is approximated by a polygon with 4 * QUAD_SEGMENTS corners.
QUAD_SEGMENTS = 16


class AreaDataError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class District:
    ags: str
    name: str


@dataclass(frozen=True, slots=True)
class AreaMatch:
    """The district chosen for a position, with the share of the uncertainty area in it."""

    district: District
    share: float  # 0..1 of the uncertainty area inside the district (1.0 for a point inside)
    runner_up: District | None
    runner_up_share: float


def uncertainty_area(lat: float, lon: float, radius_m: float) -> BaseGeometry:
    """The circle around a position, in degrees (an ellipse: a degree of longitude is shorter)."""
    if radius_m <= 0:
        return Point(lon, lat)
    unit = Point(lon, lat).buffer(1.0, quad_segs=QUAD_SEGMENTS)
    lat_scale = radius_m / METRES_PER_DEGREE_LAT
    lon_scale = radius_m / (METRES_PER_DEGREE_LAT * max(math.cos(math.radians(lat)), 1e-6))
    return affinity.scale(unit, xfact=lon_scale, yfact=lat_scale, origin=(lon, lat))


class DistrictIndex:
    """District polygons, queried by point or by uncertainty circle."""

    def __init__(self, districts: list[District], geometries: list[BaseGeometry]) -> None:
        if len(districts) != len(geometries) or not districts:
            raise AreaDataError("no districts")
        self.districts = tuple(districts)
        self.geometries = geometries
        for geometry in geometries:
            shapely.prepare(geometry)
        self._tree = STRtree(geometries)
        self.by_ags = {district.ags: district for district in districts}

    @classmethod
    def parse_geojson(
        cls, text: bytes, source: str, ags_property: str = "AGS", name_property: str = "name"
    ) -> DistrictIndex:
        """The index from a GeoJSON FeatureCollection already read; ``source`` names it in errors."""
        try:
            collection: dict[str, Any] = json.loads(text)
        except ValueError as exc:
            raise AreaDataError(f"{source}: cannot read GeoJSON: {exc}") from exc
        if not isinstance(collection, dict):
            raise AreaDataError(f"{source}: not a GeoJSON FeatureCollection")
        districts, geometries = [], []
        for number, feature in enumerate(collection.get("features", [])):
            properties = feature.get("properties") or {}
            ags = str(properties.get(ags_property, "")).strip()
            if not ags:
                raise AreaDataError(f"{source}: feature {number} has no {ags_property!r}")
            try:
                geometry = shape(feature["geometry"])
            except (KeyError, ValueError, TypeError, AttributeError) as exc:
                raise AreaDataError(f"{source}: feature {number} ({ags}): bad geometry: {exc}") from exc
            if not geometry.is_valid or geometry.is_empty:
                geometry = shapely.make_valid(geometry)
            districts.append(District(ags, str(properties.get(name_property, ags))))
            geometries.append(geometry)
        if len(set(d.ags for d in districts)) != len(districts):
            raise AreaDataError(f"{source}: an {ags_property} appears twice")
        return cls(districts, geometries)

    def locate(self, lat: float, lon: float, radius_m: float = 0.0) -> AreaMatch | None:
        """The district of a position, or None if it lies in none of them."""
        area = uncertainty_area(lat, lon, radius_m)
        candidates = self._tree.query(area, predicate="intersects")
        if len(candidates) == 0:
            return None
        if area.area == 0:  # a bare point: the district that contains it
            for index in candidates:
                if self.geometries[index].covers(area):
                    return AreaMatch(self.districts[index], 1.0, None, 0.0)
            return None
        shares = sorted(
            ((self.geometries[index].intersection(area).area / area.area, int(index)) for index in candidates),
            reverse=True,
        )
        best_share, best = shares[0]
        runner_share, runner = shares[1] if len(shares) > 1 else (0.0, -1)
        return AreaMatch(
            self.districts[best],
            min(best_share, 1.0),
            self.districts[runner] if runner >= 0 else None,
            runner_share,
        )

    def owner_grid(self, step_deg: float) -> dict[tuple[int, int], str]:
        """The district at each point of a grid over all districts (for rules diff)."""
        minx, miny, maxx, maxy = shapely.total_bounds(self.geometries)
        owners: dict[tuple[int, int], str] = {}
        for i in range(int((maxx - minx) / step_deg) + 1):
            for j in range(int((maxy - miny) / step_deg) + 1):
                match = self.locate(miny + j * step_deg, minx + i * step_deg)
                if match is not None:
                    owners[(round((minx + i * step_deg) / step_deg), round((miny + j * step_deg) / step_deg))] = (
                        match.district.ags
                    )
        return owners
