"""The routing rules telecom admins tune: one YAML file, validated, loaded as frozen data.

``load_rules(path)`` reads the file and the data files it names (relative to
it), validates everything and returns ``Rules`` with the district index
built. Every error names the file, the line and the field. A service keeps its
last good rules when a new file fails (see verbund112.rules_holder).

Rules come in over the admin API, so reading them is bounded: YAML anchors and
aliases are refused (an alias bomb of a few hundred bytes expands to billions
of nodes), nesting and node counts are capped, and data files must be regular
files inside the rules folder, at most MAX_DATA_FILE_BYTES each.
"""

from __future__ import annotations

import functools
import hashlib
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

from routing.areas import AreaDataError, DistrictIndex
from routing.numbers import NumberError, to_e164

Ags = Annotated[str, StringConstraints(pattern=r"^[0-9]{5}$")]
CentreId = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9-]{0,31}$")]
AreaCode = Annotated[str, StringConstraints(pattern=r"^0[1-9][0-9]{1,4}$")]
Ags8 = Annotated[str, StringConstraints(pattern=r"^[0-9]{8}$")]  # a Gemeinde: its district's AGS and 3 digits
PlaceName = Annotated[str, StringConstraints(min_length=1, max_length=80)]
Source = Literal["pidf", "aml", "civic", "cell", "area_code", "trunk"]
DEFAULT_PRIORITY: tuple[Source, ...] = ("pidf", "aml", "civic", "cell", "area_code", "trunk")
MAX_DATA_FILE_BYTES = 32 * 1024 * 1024  # the rules file and each data file it names
MAX_YAML_DEPTH = 32  # the shipped rules nest 5 deep
MAX_YAML_NODES = 1_000_000  # a cell table of 200 000 cells fits


class RulesError(ValueError):
    """The rules cannot be used. ``problems`` lists each as 'file:line: field: message'."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SiteRule(_Frozen):
    queue: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,32}$")]


class ExternalTarget(_Frozen):
    """A Leitstelle outside the Verbund, reached over the carrier trunk."""

    name: str = Field(min_length=1, max_length=80)
    number: str | None = None  # E.164; None: no forwarding, answered locally and flagged

    @model_validator(mode="after")
    def _e164(self) -> ExternalTarget:
        if self.number is not None:
            try:
                normalised = to_e164(self.number)
            except NumberError as exc:
                raise ValueError(f"number: {exc}") from exc
            if normalised != self.number:
                raise ValueError(f"number must be written in E.164 ({normalised})")
        return self


class Areas(_Frozen):
    polygons: str = "districts.geojson"
    ags_property: str = "AGS"
    name_property: str = "name"
    # district (AGS) -> centre (a Verbund site or an external target)
    districts: dict[Ags, CentreId]
    # share of the uncertainty circle below which a decision is marked uncertain
    certain_share: float = Field(default=0.9, gt=0.5, le=1.0)


class CellEntry(_Frozen):
    ags: Ags | None = None
    lat: float | None = Field(default=None, ge=-90, le=90)
    lon: float | None = Field(default=None, ge=-180, le=180)
    radius_m: float = Field(default=2000, gt=0, le=100_000)

    @model_validator(mode="after")
    def _one_kind(self) -> CellEntry:
        if (self.ags is None) == (self.lat is None or self.lon is None):
            raise ValueError("a cell has either an ags or a lat/lon position")
        return self


class OverflowFrom(_Frozen):
    """Moving callers who wait at one site to its partner (the overflow service)."""

    enabled: bool = True
    # a caller who waited this long is moved if the partner has a spare dispatcher
    wait_threshold_s: float = Field(default=10, ge=0, le=600)
    # ... or this long while every dispatcher of the site is busy
    all_busy_after_s: float = Field(default=3, ge=0, le=600)

    @model_validator(mode="after")
    def _order(self) -> OverflowFrom:
        if self.all_busy_after_s > self.wait_threshold_s:
            raise ValueError("all_busy_after_s must not be longer than wait_threshold_s")
        return self


class Overflow(_Frozen):
    # by the site where the callers wait; a site not listed moves nobody
    sites: dict[CentreId, OverflowFrom] = {}
    # hysteresis: the partner must have had a spare dispatcher for this long
    partner_spare_for_s: float = Field(default=1.0, ge=0, le=30)
    # a move the partner has not confirmed by then is counted as failed
    confirm_within_s: float = Field(default=10, gt=0, le=120)


class RulesFile(_Frozen):
    """The schema of the rules file."""

    version: Literal[1] = 1
    sites: dict[CentreId, SiteRule] = Field(min_length=1)
    external_targets: dict[CentreId, ExternalTarget] = {}
    areas: Areas
    area_codes: dict[AreaCode, Ags] | str = "area_codes.yaml"
    cells: dict[str, CellEntry] | str = {}
    # Gemeinde (AGS) -> name, for civic addresses (a file name, or the table itself)
    municipalities: dict[Ags8, PlaceName] | str = {}
    source_priority: tuple[Source, ...] = DEFAULT_PRIORITY
    aml_max_age_s: int = Field(default=600, ge=1, le=3600)
    decision_deadline_ms: int = Field(default=150, ge=10, le=1000)
    overflow: Overflow = Overflow()


@dataclass(frozen=True)
class Rules:
    """Validated rules with their data loaded: what the routing decision reads."""

    spec: RulesFile
    index: DistrictIndex
    area_codes: dict[str, str]  # national prefix ("0365") -> AGS
    cells: dict[str, CellEntry]
    source: str  # file path the rules came from
    digest: str  # sha256 of the rules file and its data files
    municipalities: dict[str, str] = field(default_factory=dict)  # Gemeinde AGS (8 digits) -> name

    @functools.cached_property
    def _named(self) -> dict[str, list[str]]:
        named: dict[str, list[str]] = {}
        for ags, name in self.municipalities.items():
            named.setdefault(place_key(name), []).append(ags)
        return named

    def municipalities_named(self, name: str) -> list[str]:
        """The AGS of every Gemeinde of that name (case and punctuation ignored; a name can be shared)."""
        return list(self._named.get(place_key(name), []))

    def centre_of(self, ags: str) -> str | None:
        return self.spec.areas.districts.get(ags)

    def district_name(self, ags: str) -> str:
        district = self.index.by_ags.get(ags)
        return district.name if district else ags

    def centre_name(self, centre: str) -> str:
        target = self.spec.external_targets.get(centre)
        if target is not None:
            return target.name
        return f"ZLS {centre.capitalize()}"  # the Verbund's sites are its Zentrale Leitstellen


def place_key(name: str) -> str:
    """A place name for matching: case, ß/ss and punctuation ignored ("Berga/Elster" = "berga elster")."""
    return " ".join(re.split(r"[\W_]+", name.casefold().replace("ß", "ss"))).strip()


# -- loading with line numbers ----------------------------------------------------


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that remembers the line of every mapping key, by path, and bounds what it builds.

    Anchors and aliases are refused outright (rules never need them, and they
    are how a small document becomes a huge one); depth and node count are
    capped so that neither recursion nor size can exhaust the service.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise yaml.composer.ComposerError(
                None, None, "anchors and aliases (& and *) are not allowed in rules files", event.start_mark
            )
        self._nodes += 1
        if self._nodes > MAX_YAML_NODES:
            raise yaml.composer.ComposerError(None, None, f"more than {MAX_YAML_NODES} values", event.start_mark)
        if self._depth >= MAX_YAML_DEPTH:
            raise yaml.composer.ComposerError(None, None, f"nested deeper than {MAX_YAML_DEPTH}", event.start_mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    mapping = yaml.SafeLoader.construct_mapping(loader, node, deep=True)
    lines = {}
    for key_node, _ in node.value:
        lines[key_node.value] = key_node.start_mark.line + 1
    mapping["__lines__"] = lines  # removed again by _strip_lines
    mapping["__line__"] = node.start_mark.line + 1
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _strip_lines(data: Any, path: tuple[Any, ...], lines: dict[tuple[Any, ...], int]) -> Any:
    if isinstance(data, dict):
        own = data.pop("__lines__", {})
        start = data.pop("__line__", 0)
        lines[path] = start
        for key, line in own.items():
            lines[(*path, key)] = line
        return {key: _strip_lines(value, (*path, key), lines) for key, value in data.items()}
    if isinstance(data, list):
        return [_strip_lines(value, (*path, i), lines) for i, value in enumerate(data)]
    return data


def read_data_file(path: Path, folder: Path) -> bytes:
    """A file of the rules, read only if it is a regular file inside the rules folder and not too large.

    Raises RulesError naming the path. Devices and pipes are refused before
    they are opened (a pipe would block the open, /dev/zero never ends), and
    the size is checked again while reading, so a growing file cannot run on.
    """
    resolved = path.resolve()
    if not resolved.is_relative_to(folder.resolve()):
        raise RulesError([f"{path}: outside the rules folder {folder}; data files must be in it"])
    try:
        if not stat.S_ISREG(resolved.stat().st_mode):
            raise RulesError([f"{path}: not a regular file"])
        with resolved.open("rb") as data:
            content = data.read(MAX_DATA_FILE_BYTES + 1)
    except OSError as exc:
        raise RulesError([f"{path}: cannot read: {exc.strerror or exc}"]) from exc
    if len(content) > MAX_DATA_FILE_BYTES:
        raise RulesError([f"{path}: larger than {MAX_DATA_FILE_BYTES // (1024 * 1024)} MB"])
    return content


def _read_yaml(path: Path, folder: Path) -> tuple[Any, dict[tuple[Any, ...], int], bytes]:
    content = read_data_file(path, folder)
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RulesError([f"{path}: not UTF-8 text"]) from exc
    try:
        raw = yaml.load(text, Loader=_LineLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise RulesError([f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}"]) from exc
    lines: dict[tuple[Any, ...], int] = {}
    return _strip_lines(raw, (), lines), lines, content


def _problems(path: Path, error: ValidationError, lines: dict[tuple[Any, ...], int]) -> list[str]:
    problems = []
    for item in error.errors():
        loc = tuple(part for part in item["loc"] if not (isinstance(part, str) and part.startswith("function-")))
        line = 0
        for cut in range(len(loc), -1, -1):
            if loc[:cut] in lines:
                line = lines[loc[:cut]]
                break
        field = ".".join(str(part) for part in loc) or "(top level)"
        problems.append(f"{path}:{line}: {field}: {item['msg']}")
    return problems


def load_rules(path: Path | str) -> Rules:
    """Read, validate and load a rules file and the data files it names."""
    path = Path(path)
    base = path.parent
    data, lines, content = _read_yaml(path, base)
    if not isinstance(data, dict):
        raise RulesError([f"{path}:1: the rules file must be a mapping"])
    try:
        spec = RulesFile.model_validate(data)
    except ValidationError as exc:
        raise RulesError(_problems(path, exc, lines)) from exc
    digest = hashlib.sha256(content)
    problems = _reference_problems(spec, path, lines)

    polygons = base / spec.areas.polygons
    index = None
    where = f"{path}:{lines.get(('areas', 'polygons'), 0)}: areas.polygons"
    try:
        geojson = read_data_file(polygons, base)
        index = DistrictIndex.parse_geojson(geojson, str(polygons), spec.areas.ags_property, spec.areas.name_property)
        digest.update(geojson)
    except RulesError as exc:
        problems.extend(f"{where}: {problem}" for problem in exc.problems)
    except AreaDataError as exc:
        problems.append(f"{where}: {exc}")
    if index is not None:
        missing = sorted(set(spec.areas.districts) - set(index.by_ags))
        if missing:
            line = lines.get(("areas", "districts"), 0)
            problems.append(f"{path}:{line}: areas.districts: AGS not in {polygons.name}: {', '.join(missing)}")

    area_codes: dict[str, str] = (
        _load_table(base / spec.area_codes, base, "area_codes", _AreaCodeTable, problems=problems, digest=digest)
        if isinstance(spec.area_codes, str)
        else dict(spec.area_codes)
    )
    cells: dict[str, CellEntry] = (
        _load_table(base / spec.cells, base, "cells", _CellTable, problems=problems, digest=digest)
        if isinstance(spec.cells, str)
        else dict(spec.cells)
    )
    municipalities: dict[str, str] = (
        _load_table(base / spec.municipalities, base, "municipalities", _MunicipalityTable, problems=problems,
                    digest=digest)
        if isinstance(spec.municipalities, str)
        else dict(spec.municipalities)
    )  # fmt: skip
    if index is not None:
        for code, ags in area_codes.items():
            if ags not in index.by_ags:
                problems.append(f"{path}: area_codes: {code} names AGS {ags}, which has no polygon")
        for ags, name in municipalities.items():
            if ags[:5] not in index.by_ags:
                problems.append(f"{path}: municipalities: {ags} ({name}) lies in district {ags[:5]}, "
                                "which has no polygon")  # fmt: skip
    if problems or index is None:
        raise RulesError(problems)
    return Rules(spec, index, area_codes, cells, str(path), digest.hexdigest(), municipalities)


def _reference_problems(spec: RulesFile, path: Path, lines: dict[tuple[Any, ...], int]) -> list[str]:
    problems = []
    centres = set(spec.sites) | set(spec.external_targets)
    for ags, centre in spec.areas.districts.items():
        if centre not in centres:
            line = lines.get(("areas", "districts", ags), 0)
            problems.append(f"{path}:{line}: areas.districts.{ags}: unknown centre {centre!r} "
                            "(not in sites or external_targets)")  # fmt: skip
    for centre in sorted(set(spec.sites) & set(spec.external_targets)):
        problems.append(f"{path}:{lines.get(('external_targets', centre), 0)}: external_targets.{centre}: "
                        "is a site too")  # fmt: skip
    for site in spec.overflow.sites:
        if site not in spec.sites:
            problems.append(f"{path}:{lines.get(('overflow', 'sites', site), 0)}: overflow.sites.{site}: "
                            "not a site of the Verbund")  # fmt: skip
    line = lines.get(("source_priority",), 0)
    if not spec.source_priority or spec.source_priority[-1] != "trunk":
        problems.append(f"{path}:{line}: source_priority: must end with trunk, the last resort")
    if len(set(spec.source_priority)) != len(spec.source_priority):
        problems.append(f"{path}:{line}: source_priority: lists a source twice")
    return problems


class _AreaCodeTable(_Frozen):
    area_codes: dict[AreaCode, Ags]


class _CellTable(_Frozen):
    cells: dict[str, CellEntry]


class _MunicipalityTable(_Frozen):
    municipalities: dict[Ags8, PlaceName]


def _load_table(
    path: Path, folder: Path, key: str, model: type[BaseModel], *, problems: list[str], digest: Any
) -> dict[str, Any]:
    try:
        data, lines, content = _read_yaml(path, folder)
        table = model.model_validate(data)
        digest.update(content)
        return dict(getattr(table, key))
    except RulesError as exc:
        problems.extend(exc.problems)
    except ValidationError as exc:
        problems.extend(_problems(path, exc, lines))
    return {}
