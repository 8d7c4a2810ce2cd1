"""The call card: district and responsible centre for every location, table-driven over the real rules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from routing.decision import CallFacts, Places, SiteStates, decide
from routing.location import civic_address, parse_location_info
from routing.rules import Rules, load_rules
from verbund112.features.cards import build_card, location_from_aml, location_from_record
from verbund112.features.routing_service import call_record
from verbund112.store.records import CallRecord

RULES_FILE = Path(__file__).resolve().parents[2] / "rules/verbund112.yaml"
NOW = 1_800_000_000.0


@pytest.fixture(scope="module")
def places() -> Places:
    rules: Rules = load_rules(RULES_FILE)
    return Places(rules)


def aml(lat: float, lon: float, radius: float = 15.0, age: float = 20.0) -> dict[str, Any]:
    return {"lat": lat, "lon": lon, "radius_m": radius, "method": "GNSS", "time": NOW - age, "confidence": 0.68}


# Positions from tests/unit/test_decision.py; the wide circle crosses the Jena / Saale-Holzland border.
@pytest.mark.parametrize(
    ("lat", "lon", "radius", "district", "ags", "centre", "centre_name", "uncertain"),
    [
        (50.9279, 11.5891, 20, "Jena", "16053", "jena", "ZLS Jena", False),
        (50.8786, 12.0824, 10, "Gera", "16052", "gera", "ZLS Gera", False),
        (50.6547, 12.1997, 30, "Greiz", "16076", "gera", "ZLS Gera", False),
        (50.3297, 11.7069, 50, "Hof", "09475", "ils-hochfranken", "ILS Hochfranken (Hof)", False),
        (50.93, 11.67, 5000, "Saale-Holzland-Kreis", "16074", "jena", "ZLS Jena", True),
        (52.52, 13.40, 10, None, None, None, None, False),  # Berlin: in no district of ours
    ],
)  # fmt: skip
def test_aml_locations_carry_district_and_centre(
    places: Places, lat: float, lon: float, radius: float, district: str | None, ags: str | None,
    centre: str | None, centre_name: str | None, uncertain: bool,
) -> None:  # fmt: skip
    location = location_from_aml(aml(lat, lon, radius), NOW, places)
    assert (location["district"], location["ags"]) == (district, ags)
    assert (location["centre"], location["centre_name"]) == (centre, centre_name)
    assert location["uncertain_border"] is uncertain
    assert location["source"] == "aml"
    assert location["age_s"] == 20.0
    assert location["radius_m"] == radius


def test_without_rules_the_keys_are_there_but_empty() -> None:
    location = location_from_aml(aml(50.9279, 11.5891), NOW)
    assert location["district"] is None and location["centre"] is None


def test_a_garbled_fix_is_shown_without_a_district(places: Places) -> None:
    location = location_from_aml(aml(50.9279, 11.5891) | {"lat": "x"}, NOW, places)
    assert location["district"] is None and location["lat"] == "x"


@pytest.mark.parametrize(
    ("used", "centre", "uncertain"),
    [
        ({"source": "area_code", "district": "Gera", "ags": "16052", "share": 1.0, "position": None}, "gera", False),
        ({"source": "pidf", "district": "Jena", "ags": "16053", "share": 0.6,
          "position": {"lat": 50.93, "lon": 11.67, "radius_m": 5000, "method": "Cell"}}, "jena", True),
        ({"source": "cell", "district": "Kronach", "ags": "09476", "share": 1.0, "position": None}, "ils-coburg",
         False),
    ],
)  # fmt: skip
def test_routing_locations_get_their_centre(places: Places, used: dict[str, Any], centre: str, uncertain: bool) -> None:
    location = location_from_record({"location": used}, NOW - 30, NOW, places)
    assert location is not None
    assert location["district"] == used["district"] and location["ags"] == used["ags"]
    assert location["centre"] == centre
    assert location["uncertain_border"] is uncertain
    assert location["age_s"] == 30


def test_the_card_places_every_location(places: Places) -> None:
    record = {"caller": "+4915112345678", "entry_site": "jena", "routed_at": NOW - 40, "routed_to": "jena",
              "reason": "r", "certain": True, "flags": [],
              "location": {"source": "pidf", "district": "Jena", "ags": "16053", "share": 1.0,
                           "position": {"lat": 50.9279, "lon": 11.5891, "radius_m": 25, "method": "GPS"}}}  # fmt: skip
    card = build_card(
        call_id="jena-1", answered_site="jena", dispatcher="jena-d1", caller_number="+4915112345678", from_site="",
        wait_s=3, record=record, aml_trail=[aml(50.8786, 12.0824)], earlier_calls=[], now=NOW, places=places,
    )  # fmt: skip
    assert [(loc["source"], loc["district"], loc["centre"]) for loc in card["locations"]] == [
        ("aml", "Gera", "gera"),
        ("pidf", "Jena", "jena"),
    ]


def routed_card(facts: CallFacts, places: Places) -> dict[str, Any]:
    """The card at gera-d1 for a call routed at its entry site, its record read back through the store's JSON."""
    decision = decide(facts, places.rules, SiteStates(frozenset({"jena", "gera"})))
    stored = CallRecord.model_validate_json(call_record(facts, decision).to_json())
    return build_card(
        call_id=facts.call_id, answered_site="gera", dispatcher="gera-d1", caller_number=facts.caller_number,
        from_site=facts.site, wait_s=3, record=stored.as_dict(), aml_trail=[], earlier_calls=[], now=NOW,
        places=places,
    )  # fmt: skip


def test_a_3d_pidf_lo_position_is_routed_by_lat_lon_and_shows_its_altitude(places: Places) -> None:
    """crs="3d" as Asterisk hands it over: routed to Jena, the altitude kept in the record and on the card."""
    position = parse_location_info('shape="Sphere",crs="3d",pos="50.9279 11.5891 312.4",radius="20"', "GPS")
    card = routed_card(CallFacts("jena", "jena-3.1", "+4915112345678", position, now=NOW), places)
    assert card["routing"]["centre"] == "jena"
    (shown,) = card["locations"]
    assert (shown["source"], shown["district"], shown["radius_m"], shown["altitude_m"]) == ("pidf", "Jena", 20, 312.4)


def test_an_aml_fix_shows_its_altitude_and_a_2d_position_none() -> None:
    assert location_from_aml(aml(50.9279, 11.5891) | {"altitude_m": 160.5}, NOW)["altitude_m"] == 160.5
    assert location_from_aml(aml(50.9279, 11.5891), NOW)["altitude_m"] is None


def test_a_civic_address_shows_on_the_card_with_german_labels(places: Places) -> None:
    """Routed by its Gemeinde: the card has the address lines, the district and today's centre, no position."""
    civic = civic_address({"country": "DE", "A3": "Weida", "RD": "Markt", "HNO": "3", "HNS": "b", "FLR": "1",
                           "NAM": "Praxis Dr. Muster", "PC": "07570"})  # fmt: skip
    card = routed_card(CallFacts("jena", "jena-4.1", "+4915112345678", now=NOW, civic=civic), places)
    (shown,) = card["locations"]
    assert (shown["source"], shown["district"], shown["centre_name"]) == ("civic", "Greiz", "ZLS Gera")
    assert "lat" not in shown
    assert shown["address"] == [["Name", "Praxis Dr. Muster"], ["Straße", "Markt"], ["Hausnummer", "3b"],
                                ["Etage", "1"], ["Ort", "07570 Weida"], ["Land", "DE"]]  # fmt: skip


def test_an_address_beside_the_position_that_routed_is_shown_too(places: Places) -> None:
    civic = civic_address({"A3": "Erfurt", "RD": "Anger"})  # outside the Verbund: not routed by, but shown
    position = parse_location_info('shape="Circle",crs="2d",pos="50.9279 11.5891",radius="20"', "GPS")
    card = routed_card(CallFacts("jena", "jena-4.2", "+4915112345678", position, now=NOW, civic=civic), places)
    assert [(shown["source"], shown.get("address")) for shown in card["locations"]] == [
        ("pidf", None), ("civic", [["Straße", "Anger"], ["Ort", "Erfurt"]]),
    ]  # fmt: skip
