"""The routing decision for one 112 call: a pure function of the call's facts,
the rules and the live state of the sites.

Location sources are tried in the rules' priority order (PIDF-LO, AML, civic
address, cell, Ortsnetz, trunk); the first that places the caller in a district
with a centre decides. Garbage in a source is skipped with a note, never a failure:
the trunk (the site the network chose) always answers last.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field

from routing.areas import AreaMatch
from routing.location import CivicAddress, Position
from routing.numbers import NumberError, is_mobile, national_form, to_e164
from routing.rules import Rules, Source, place_key


class Route(enum.StrEnum):
    """What the dialplan understands in V112_ROUTE."""

    LOCAL = "local"
    PARTNER = "partner"
    EXTERNAL = "external"


@dataclass(frozen=True, slots=True)
class AmlFix:
    position: Position
    time: float  # Unix seconds of the fix


@dataclass(frozen=True, slots=True)
class CallFacts:
    site: str  # where the call entered (the trunk)
    call_id: str
    caller_number: str  # as delivered
    pidf: Position | None = None
    pidf_problem: str = ""
    aml: AmlFix | None = None
    cell_id: str | None = None
    now: float = 0.0
    civic: CivicAddress | None = None  # the PIDF-LO's civic address (RFC 4119/5139)


@dataclass(frozen=True, slots=True)
class SiteStates:
    """Sites whose service reported recently (the entry site counts as alive)."""

    alive: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class LocationUsed:
    source: Source
    position: Position | None
    ags: str | None
    district: str
    share: float  # of the uncertainty area in the district (1.0 when not a position)
    detail: str


@dataclass(frozen=True, slots=True)
class Decision:
    route: Route
    centre: str  # a Verbund site or an external target id
    queue: str | None  # for local and partner routes
    external_number: str | None
    reason: str  # in words an admin understands
    location: LocationUsed | None
    certain: bool
    caller_e164: str | None
    notes: tuple[str, ...] = field(default=())  # sources skipped and why
    flags: tuple[str, ...] = field(default=())  # for the dispatcher: uncertain-border, neighbour-not-forwarded, ...


@dataclass(frozen=True, slots=True)
class Place:
    """The district a position or an AGS lies in, and the centre responsible for it."""

    ags: str
    district: str
    centre: str | None  # a Verbund site or an external target; None: the rules name none
    centre_name: str | None
    share: float  # of the uncertainty area in the district
    uncertain_border: bool  # share below the rules' certain_share


@dataclass(frozen=True)
class Places:
    """District and centre lookups with the rules' area index and district→centre mapping,
    the same that decide() uses; for the call card (pure, like decide)."""

    rules: Rules

    def at(self, lat: float, lon: float, radius_m: float) -> Place | None:
        """None when the position lies in no known district."""
        match = self.rules.index.locate(lat, lon, radius_m)
        if match is None:
            return None
        return self._place(match.district.ags, match.share)

    def of(self, ags: str) -> Place:
        return self._place(ags, 1.0)

    def _place(self, ags: str, share: float) -> Place:
        centre = self.rules.centre_of(ags)
        return Place(
            ags, self.rules.district_name(ags), centre, None if centre is None else self.rules.centre_name(centre),
            share, share < self.rules.spec.areas.certain_share,
        )  # fmt: skip


def decide(facts: CallFacts, rules: Rules, sites: SiteStates) -> Decision:
    notes: list[str] = []
    try:
        caller = to_e164(facts.caller_number)
    except NumberError as exc:
        caller = None
        notes.append(f"caller number unusable ({exc})")
    located: tuple[LocationUsed, str] | None = None
    for source in rules.spec.source_priority:
        if source == "trunk":
            break
        located = _locate(source, facts, caller, rules, notes)
        if located is not None:
            break
    if located is None:
        return _at_trunk(facts, rules, caller, notes)
    location, centre = located
    return _target(facts, rules, sites, caller=caller, location=location, centre=centre, notes=notes)


def _locate(
    source: Source, facts: CallFacts, caller: str | None, rules: Rules, notes: list[str]
) -> tuple[LocationUsed, str] | None:
    return _LOCATORS[source](facts, caller, rules, notes)


def _from_pidf(facts: CallFacts, caller: str | None, rules: Rules, notes: list[str]) -> _Located:
    if facts.pidf_problem:
        notes.append(f"PIDF-LO ignored: {facts.pidf_problem}")
    if facts.pidf is None:
        return None
    return _by_position("pidf", facts.pidf, "PIDF-LO position", rules, notes)


def _from_aml(facts: CallFacts, caller: str | None, rules: Rules, notes: list[str]) -> _Located:
    if facts.aml is None:
        return None
    age = facts.now - facts.aml.time
    if age > rules.spec.aml_max_age_s:
        notes.append(f"AML fix ignored: {age:.0f} s old")
        return None
    return _by_position("aml", facts.aml.position, f"AML fix ({age:.0f} s old)", rules, notes)


def _from_civic(facts: CallFacts, caller: str | None, rules: Rules, notes: list[str]) -> _Located:
    """The Gemeinde (A3, else A4) of the civic address, if the municipality table knows it: its district decides."""
    address = facts.civic
    if address is None:
        return None
    country = address.get("country").upper()
    if country not in ("", "DE", "DEU"):
        notes.append(f"civic address ignored: country {country[:3]}, not Germany")
        return None
    # A3 is the Gemeinde (RFC 5139); without one, A4 (some LIS, DEC112's among them, put the town there)
    name = address.municipality or address.get("A4")
    if not name:
        notes.append("civic address ignored: it names no Gemeinde (A3, A4)")
        return None
    found = rules.municipalities_named(name)
    why = "is not in the municipality table" if not found else f"names {len(found)} Gemeinden"
    if len(found) > 1 and address.get("A2"):  # two Gemeinden of one name: the address's district (A2) decides
        district = _district_key(address.get("A2"))
        found = [ags for ags in found if _district_key(rules.district_name(ags[:5])) == district]
        why = f"{why}, its district (A2) none of them" if not found else why
    if len(found) != 1:
        notes.append(f"civic address ignored: its Gemeinde {why}")
        return None
    (ags,) = found
    return _by_district("civic", ags[:5], f"civic address in {rules.municipalities[ags]}", rules, notes)


def _district_key(name: str) -> str:
    """'Landkreis Greiz', 'Kreis Greiz' and 'Greiz' name one district."""
    key = place_key(name)
    return key.removeprefix("landkreis ").removeprefix("kreis ")


def _from_cell(facts: CallFacts, caller: str | None, rules: Rules, notes: list[str]) -> _Located:
    if not facts.cell_id:
        return None
    entry = rules.cells.get(facts.cell_id)
    if entry is None:
        notes.append(f"cell {facts.cell_id} is not in the cell table")
        return None
    if entry.ags is not None:
        return _by_district("cell", entry.ags, f"cell {facts.cell_id}", rules, notes)
    assert entry.lat is not None and entry.lon is not None  # CellEntry validates one of the two
    position = Position(entry.lat, entry.lon, entry.radius_m, "Circle", "Cell")
    return _by_position("cell", position, f"cell {facts.cell_id}", rules, notes)


def _from_area_code(facts: CallFacts, caller: str | None, rules: Rules, notes: list[str]) -> _Located:
    national = national_form(caller) if caller is not None and not is_mobile(caller) else None
    if national is None:
        return None
    prefix = next((national[:n] for n in range(6, 2, -1) if national[:n] in rules.area_codes), None)
    if prefix is None:
        notes.append(f"Ortsnetz of {national[:6]}… is not in the area-code table")
        return None
    return _by_district("area_code", rules.area_codes[prefix], f"Ortsnetz {prefix}", rules, notes)


_Located = tuple[LocationUsed, str] | None
_LOCATORS: dict[str, Callable[[CallFacts, str | None, Rules, list[str]], _Located]] = {
    "pidf": _from_pidf,
    "aml": _from_aml,
    "civic": _from_civic,
    "cell": _from_cell,
    "area_code": _from_area_code,
}


def _by_position(
    source: Source, position: Position, label: str, rules: Rules, notes: list[str]
) -> tuple[LocationUsed, str] | None:
    match: AreaMatch | None = rules.index.locate(position.lat, position.lon, position.radius_m)
    if match is None:
        notes.append(f"{label} lies outside every known district")
        return None
    centre = rules.centre_of(match.district.ags)
    if centre is None:
        notes.append(f"{label} lies in {match.district.name}, which has no centre in the rules")
        return None
    detail = f"{label} (±{position.radius_m:.0f} m) lies in {match.district.name}"
    if match.share < 1.0 and match.runner_up is not None:
        detail += f" ({match.share:.0%}; {match.runner_up.name} {match.runner_up_share:.0%})"
    location = LocationUsed(source, position, match.district.ags, match.district.name, match.share, detail)
    return location, centre


def _by_district(
    source: Source, ags: str, label: str, rules: Rules, notes: list[str]
) -> tuple[LocationUsed, str] | None:
    centre = rules.centre_of(ags)
    name = rules.district_name(ags)
    if centre is None:
        notes.append(f"{label} points to {name}, which has no centre in the rules")
        return None
    return LocationUsed(source, None, ags, name, 1.0, f"{label} belongs to {name}"), centre


def _at_trunk(facts: CallFacts, rules: Rules, caller: str | None, notes: list[str]) -> Decision:
    return Decision(
        route=Route.LOCAL,
        centre=facts.site,
        queue=rules.spec.sites[facts.site].queue if facts.site in rules.spec.sites else None,
        external_number=None,
        reason=f"no usable location: answered where the network delivered it ({facts.site})",
        location=None,
        certain=False,
        caller_e164=caller,
        notes=tuple(notes),
        flags=("no-location",),
    )


def _target(
    facts: CallFacts,
    rules: Rules,
    sites: SiteStates,
    *,
    caller: str | None,
    location: LocationUsed,
    centre: str,
    notes: list[str],
) -> Decision:
    flags: list[str] = []
    certain = location.source in ("pidf", "aml") and location.share >= rules.spec.areas.certain_share
    if location.source in ("pidf", "aml", "cell") and location.share < rules.spec.areas.certain_share:
        flags.append("uncertain-border")
    local_queue = rules.spec.sites[facts.site].queue if facts.site in rules.spec.sites else None

    def decision(route: Route, target: str, queue: str | None, number: str | None, reason: str) -> Decision:
        return Decision(
            route, target, queue, number, f"{location.detail} → {reason}", location, certain, caller,
            tuple(notes), tuple(flags),
        )  # fmt: skip

    if centre in rules.spec.sites:
        if centre == facts.site:
            return decision(Route.LOCAL, centre, local_queue, None, f"ZLS {centre}: stays here")
        if centre in sites.alive:
            queue = rules.spec.sites[centre].queue
            return decision(Route.PARTNER, centre, queue, None, f"ZLS {centre}: handed over from {facts.site}")
        flags.append("partner-unavailable")
        return decision(
            Route.LOCAL, facts.site, local_queue, None, f"ZLS {centre}, but it is not reporting: answered here"
        )
    target = rules.spec.external_targets[centre]
    if target.number is not None:
        return decision(Route.EXTERNAL, centre, None, target.number, f"{target.name}: forwarded to {target.number}")
    flags.append("neighbour-not-forwarded")
    return decision(
        Route.LOCAL, facts.site, local_queue, None, f"{target.name} (no forwarding number configured): answered here"
    )
