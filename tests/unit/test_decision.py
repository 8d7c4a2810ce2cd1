"""The routing decision, table-driven over the real rules and district data."""

from __future__ import annotations

from pathlib import Path

import pytest

from routing.decision import AmlFix, CallFacts, Route, SiteStates, decide
from routing.location import LocationError, Position, parse_access_network_info
from routing.rules import CellEntry, Rules, load_rules

RULES_FILE = Path(__file__).resolve().parents[2] / "rules/verbund112.yaml"
BOTH = SiteStates(frozenset({"jena", "gera"}))
NOW = 1_800_000_000.0

# Positions well inside their districts, and one on the Jena / Saale-Holzland border.
JENA_MARKT = Position(50.9279, 11.5891, 20, "Circle", "GPS")
GREIZ = Position(50.6547, 12.1997, 30, "Circle", "GPS")
GERA = Position(50.8786, 12.0824, 10, "Circle", "GPS")
NAILA_HOF = Position(50.3297, 11.7069, 50, "Circle", "GPS")  # Landkreis Hof, outside the Verbund
BORDER = Position(50.93, 11.67, 5000, "Circle", "Cell")
BERLIN = Position(52.52, 13.40, 10, "Circle", "GPS")


@pytest.fixture(scope="module")
def rules() -> Rules:
    return load_rules(RULES_FILE)


def with_changes(rules: Rules, **spec_changes) -> Rules:
    spec = rules.spec.model_copy(update=spec_changes)
    cells = spec_changes.get("cells", rules.cells)
    return Rules(spec, rules.index, rules.area_codes, cells, rules.source, rules.digest, rules.municipalities)


@pytest.mark.parametrize(
    ("facts", "route", "centre", "source", "certain"),
    [
        # fixed lines: the Ortsnetz decides
        (CallFacts("jena", "c", "036411234567"), Route.LOCAL, "jena", "area_code", False),
        (CallFacts("jena", "c", "0365123456"), Route.PARTNER, "gera", "area_code", False),
        (CallFacts("gera", "c", "+49365123456"), Route.LOCAL, "gera", "area_code", False),
        (CallFacts("gera", "c", "00493671234567"), Route.PARTNER, "jena", "area_code", False),  # Saalfeld 03671
        (CallFacts("jena", "c", "03663123456"), Route.PARTNER, "gera", "area_code", False),  # Schleiz
        # a PIDF-LO position beats the Ortsnetz
        (CallFacts("jena", "c", "036411234567", pidf=GREIZ), Route.PARTNER, "gera", "pidf", True),
        (CallFacts("gera", "c", "0365123456", pidf=JENA_MARKT), Route.PARTNER, "jena", "pidf", True),
        (CallFacts("gera", "c", "+4915112345678", pidf=GERA), Route.LOCAL, "gera", "pidf", True),
        # AML when there is no PIDF-LO
        (
            CallFacts("jena", "c", "+4915112345678", aml=AmlFix(GREIZ, NOW - 30), now=NOW),
            Route.PARTNER,
            "gera",
            "aml",
            True,
        ),
        # mobile numbers have no Ortsnetz: the trunk decides
        (CallFacts("jena", "c", "+4915112345678"), Route.LOCAL, "jena", None, False),
        # unknown numbers and places: the trunk decides
        (CallFacts("gera", "c", "garbage"), Route.LOCAL, "gera", None, False),
        (CallFacts("jena", "c", "+4930123456"), Route.LOCAL, "jena", None, False),  # Berlin Ortsnetz: no entry
        (CallFacts("jena", "c", "+4915112345678", pidf=BERLIN), Route.LOCAL, "jena", None, False),
        # a neighbour without a forwarding number: answered here
        (CallFacts("gera", "c", "+4915112345678", pidf=NAILA_HOF), Route.LOCAL, "gera", "pidf", True),
    ],
)
def test_routes(rules: Rules, facts: CallFacts, route: Route, centre: str, source: str | None, certain: bool) -> None:
    decision = decide(facts, rules, BOTH)
    assert decision.route is route, decision.reason
    assert decision.centre == centre, decision.reason
    assert (decision.location.source if decision.location else None) == source
    assert decision.certain is certain
    assert decision.reason


def test_queue_of_a_partner_route_is_the_partners(rules: Rules) -> None:
    decision = decide(CallFacts("jena", "c", "0365123456"), rules, BOTH)
    assert decision.queue == "112-gera"
    assert "Gera" in decision.reason


def test_a_position_across_a_border_is_decided_by_overlap_and_marked_uncertain(rules: Rules) -> None:
    decision = decide(CallFacts("gera", "c", "+4915112345678", pidf=BORDER), rules, BOTH)
    assert decision.location is not None
    assert decision.location.district == "Saale-Holzland-Kreis"
    assert 0.5 < decision.location.share < 0.9
    assert decision.route is Route.PARTNER and decision.centre == "jena"
    assert decision.certain is False
    assert "uncertain-border" in decision.flags
    assert "Jena" in decision.reason  # the runner-up is named


def test_a_partner_that_does_not_report_keeps_the_call_here(rules: Rules) -> None:
    decision = decide(CallFacts("jena", "c", "0365123456"), rules, SiteStates(frozenset({"jena"})))
    assert decision.route is Route.LOCAL
    assert decision.centre == "jena"
    assert "partner-unavailable" in decision.flags


def test_a_neighbour_with_a_number_gets_the_call_forwarded(rules: Rules) -> None:
    targets = dict(rules.spec.external_targets)
    targets["ils-hochfranken"] = targets["ils-hochfranken"].model_copy(update={"number": "+499281112"})
    forwarding = with_changes(rules, external_targets=targets)
    decision = decide(CallFacts("gera", "c", "+4915112345678", pidf=NAILA_HOF), forwarding, BOTH)
    assert decision.route is Route.EXTERNAL
    assert decision.external_number == "+499281112"
    assert decision.caller_e164 == "+4915112345678"


def test_neighbour_without_number_is_flagged(rules: Rules) -> None:
    decision = decide(CallFacts("gera", "c", "+4915112345678", pidf=NAILA_HOF), rules, BOTH)
    assert "neighbour-not-forwarded" in decision.flags


def test_stale_aml_is_skipped_with_a_note(rules: Rules) -> None:
    facts = CallFacts("jena", "c", "0365123456", aml=AmlFix(JENA_MARKT, NOW - 3000), now=NOW)
    decision = decide(facts, rules, BOTH)
    assert decision.location is not None and decision.location.source == "area_code"
    assert any("AML fix ignored" in note for note in decision.notes)


def test_a_broken_pidf_is_noted_and_the_next_source_decides(rules: Rules) -> None:
    facts = CallFacts("jena", "c", "0365123456", pidf_problem="pos outside WGS84 ranges")
    decision = decide(facts, rules, BOTH)
    assert decision.centre == "gera"
    assert decision.notes[0] == "PIDF-LO ignored: pos outside WGS84 ranges"


@pytest.mark.parametrize(
    ("cells", "cell_id", "centre", "noted"),
    [
        ({"26201AB": CellEntry(ags="16076")}, "26201AB", "gera", False),
        ({"26201AB": CellEntry(lat=50.9279, lon=11.5891, radius_m=800)}, "26201AB", "jena", False),
        ({}, "26201AB", "jena", True),  # unknown cell: noted, the trunk decides
    ],
)
def test_cell_table(rules: Rules, cells: dict, cell_id: str, centre: str, noted: bool) -> None:
    decision = decide(CallFacts("jena", "c", "+4915112345678", cell_id=cell_id), with_changes(rules, cells=cells), BOTH)
    assert decision.centre == centre
    assert any("cell" in note for note in decision.notes) is noted


def test_source_priority_is_followed(rules: Rules) -> None:
    ortsnetz_first = with_changes(rules, source_priority=("area_code", "pidf", "trunk"))
    decision = decide(CallFacts("jena", "c", "036411234567", pidf=GREIZ), ortsnetz_first, BOTH)
    assert decision.centre == "jena"


@pytest.mark.parametrize(
    ("header", "cell"),
    [
        ("3GPP-E-UTRAN-FDD; utran-cell-id-3gpp=2620100a1b2c3d4e", "2620100A1B2C3D4E"),
        ('3GPP-UTRAN-FDD;utran-cell-id-3gpp="262011234ABCD"', "262011234ABCD"),
        ("3GPP-NR; nrcgi=262010000000ABC12", "262010000000ABC12"),
    ],
)
def test_cell_id_from_p_access_network_info(header: str, cell: str) -> None:
    assert parse_access_network_info(header) == cell


@pytest.mark.parametrize("header", ["", "IEEE-802.11", "3GPP-E-UTRAN-FDD; utran-cell-id-3gpp=<script>", "x" * 600])
def test_garbage_access_network_info_is_refused(header: str) -> None:
    with pytest.raises(LocationError):
        parse_access_network_info(header)
