"""Civic addresses route by their Gemeinde: the municipality table of the rules names its district."""

from __future__ import annotations

from pathlib import Path

import pytest

from routing.decision import AmlFix, CallFacts, Route, SiteStates, decide
from routing.location import CivicAddress, Position, civic_address
from routing.rules import Rules, load_rules
from routing.simulation import simulate

RULES_FILE = Path(__file__).resolve().parents[2] / "rules/verbund112.yaml"
BOTH = SiteStates(frozenset({"jena", "gera"}))
NOW = 1_800_000_000.0
MOBILE = "+4915112345678"


@pytest.fixture(scope="module")
def rules() -> Rules:
    return load_rules(RULES_FILE)


def address(**elements: str) -> CivicAddress:
    return civic_address({"country": "DE", "A1": "Thüringen", "RD": "Markt", "HNO": "1"} | elements)


@pytest.mark.parametrize(
    ("site", "civic", "route", "centre", "district"),
    [
        ("jena", address(A3="Ronneburg"), Route.PARTNER, "gera", "Greiz"),
        ("gera", address(A3="Ronneburg"), Route.LOCAL, "gera", "Greiz"),
        ("gera", address(A3="Kahla"), Route.PARTNER, "jena", "Saale-Holzland-Kreis"),
        ("jena", address(A3="GERA"), Route.PARTNER, "gera", "Gera"),  # case does not matter
        ("jena", address(A3="Berga (Elster)"), Route.PARTNER, "gera", "Greiz"),  # "Berga/Elster" in the table
        ("jena", address(A3="Schleiz", country=""), Route.PARTNER, "gera", "Saale-Orla-Kreis"),  # no country
        ("jena", address(A4="Weida"), Route.PARTNER, "gera", "Greiz"),  # the town in A4, no A3 (DEC112's LIS)
        ("gera", address(A3="Lehesten", A2="Saalfeld-Rudolstadt"), Route.PARTNER, "jena", "Saalfeld-Rudolstadt"),
        (
            "gera",
            address(A3="Lehesten", A2="Landkreis Saalfeld-Rudolstadt"),
            Route.PARTNER,
            "jena",
            "Saalfeld-Rudolstadt",
        ),
    ],
)
def test_a_civic_address_routes_by_its_gemeindes_district(
    rules: Rules, site: str, civic: CivicAddress, route: Route, centre: str, district: str
) -> None:
    decision = decide(CallFacts(site, "c", MOBILE, civic=civic), rules, BOTH)
    assert (decision.route, decision.centre) == (route, centre)
    assert decision.location is not None and decision.location.source == "civic"
    assert decision.location.district == district and decision.location.share == 1.0
    assert decision.location.position is None
    assert decision.reason.startswith("civic address in ") and f"belongs to {district} →" in decision.reason
    assert decision.flags == ()
    assert not decision.certain  # a stated address, not a measured position


@pytest.mark.parametrize(
    ("civic", "note"),
    [
        (address(A3="Lehesten"), "names 2 Gemeinden"),  # two of that name, no district to tell them apart
        (address(A3="Lehesten", A2="Greiz"), "names 2 Gemeinden, its district (A2) none of them"),
        (address(A3="Erfurt"), "is not in the municipality table"),
        (address(A3="Gera", country="AT"), "country AT, not Germany"),
        (address(A5="Lusan"), "names no Gemeinde (A3, A4)"),
        (address(A3="Erfurt", A4="Weida"), "is not in the municipality table"),  # A4 only without an A3
    ],
)
def test_an_unusable_civic_address_is_noted_and_the_next_source_decides(
    rules: Rules, civic: CivicAddress, note: str
) -> None:
    decision = decide(CallFacts("jena", "c", "0365123456", civic=civic), rules, BOTH)
    assert decision.location is not None and decision.location.source == "area_code"  # Ortsnetz Gera
    assert any(note in text for text in decision.notes), decision.notes


def test_a_position_and_the_handsets_aml_come_before_the_address(rules: Rules) -> None:
    in_greiz = address(A3="Ronneburg")
    jena = Position(50.9279, 11.5891, 20, "Circle", "GPS")
    by_pidf = decide(CallFacts("gera", "c", MOBILE, pidf=jena, civic=in_greiz), rules, BOTH)
    assert by_pidf.location is not None and (by_pidf.location.source, by_pidf.centre) == ("pidf", "jena")
    by_aml = decide(CallFacts("gera", "c", MOBILE, aml=AmlFix(jena, NOW - 30), now=NOW, civic=in_greiz), rules, BOTH)
    assert by_aml.location is not None and (by_aml.location.source, by_aml.centre) == ("aml", "jena")


def test_the_civic_source_follows_the_rules_priority(rules: Rules) -> None:
    without = rules.spec.model_copy(update={"source_priority": ("pidf", "aml", "area_code", "trunk")})
    no_civic = Rules(without, rules.index, rules.area_codes, rules.cells, rules.source, rules.digest,
                     rules.municipalities)  # fmt: skip
    decision = decide(CallFacts("jena", "c", MOBILE, civic=address(A3="Ronneburg")), no_civic, BOTH)
    assert decision.location is None and decision.route is Route.LOCAL


def test_a_simulation_takes_the_civic_address(rules: Rules) -> None:
    decision = simulate(rules, number=MOBILE, site="jena", civic=address(A3="Weida"))
    assert decision.location is not None and decision.location.source == "civic" and decision.centre == "gera"
