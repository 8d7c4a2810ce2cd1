"""Every public peer's location vector (tests/support/conformance/) through our parsers.

Each vector gives the peer's outcome, or carries ``we_differ`` and gives ours (OURS below names
it, so a refreshed file with a new difference fails here until someone decides). No input, and
no truncated or garbled variant of one, raises anything but the parser's own error.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from aml.parse import AmlError, AmlMessage, parse_https_body, parse_sms
from aml.pull import PullAnswer, PullError, parse_answer
from routing.location import LocationError, Position, distance_m, parse_location_profile
from routing.pidf import PidfLocation, parse_pidf_lo

DATA = json.loads((Path(__file__).parents[1] / "support/conformance/location-vectors.json").read_text())
VECTORS = DATA["vectors"]
PARSER_ERRORS = (LocationError, AmlError, PullError)

# Our outcome where the vector says we_differ (its reason is in the file).
OURS = {
    "gridgears-sms-invalidMessageLength": "position",
    "gridgears-sms-unknownAttribute": "position",
    "gridgears-sms-unknownPositioningMethod": "position",
    "gridgears-sms-invalidLevelOfConfidence": "position",
    "gridgears-sms-noLatitude": "reject",
    "gridgears-sms-invalidAttributePair": "position",
    "gridgears-sms-invalidAttribute": "position",
    "aml-sms-builder-address-west": "reject",
    "dec112-rfc5491-point-example": "reject",
    "dec112-simple-circle-invalid-tuple": "reject",
    "dec112-ng112-js-legacy-generatePidf": "reject",
}


def unpack_gsm7(hex_text: str) -> str:
    """A 7-bit data SMS as the SMS gateway hands it on: septets, GSM 03.38 default alphabet.

    Only the characters an AML message uses, which GSM 03.38 places where ASCII does.
    """
    data = bytes.fromhex(hex_text)
    bits = int.from_bytes(data, "little")
    septets = [(bits >> (7 * i)) & 0x7F for i in range(len(data) * 8 // 7)]
    if len(data) % 7 == 0 and septets[-1] == 0:
        septets.pop()  # the fill bits of the last octet
    text = "".join(map(chr, septets))
    assert all(c.isalnum() or c in ' ";=.,+-' for c in text), "outside the alphabet AML uses"
    return text


def run(vector: dict[str, Any]) -> Any:
    """The vector's input through the parser live traffic of its kind takes."""
    given, kind = vector["input"], vector["kind"]
    if kind == "pidf":
        return parse_pidf_lo(given["document"])
    if kind == "location_info":
        return parse_location_profile(given["text"], given.get("method", ""))
    if kind == "aml_sms":
        text = given["text"] if "text" in given else unpack_gsm7(given["data_sms_hex"])
        return parse_sms(text, given.get("sender", DATA["sender_for_sms"]))
    if kind == "aml_https":
        return parse_https_body(given["body"].encode())
    if kind == "aml_pull":
        return parse_answer(given["body"].encode(), given["number"], ZoneInfo(given["zone"]), given["now"])
    raise AssertionError(f"unknown kind {kind}")


def outcome(result: Any) -> str:
    if isinstance(result, PidfLocation):
        return "position" if result.position is not None else "civic"
    if isinstance(result, Position):
        return "position"
    if isinstance(result, AmlMessage):
        return "position" if result.position is not None else "no_position"
    if isinstance(result, PullAnswer):
        return "fixes" if result.fixes else "no_data"
    return "civic"  # routing.location.CivicAddress


def position_of(result: Any) -> Position:
    position = result if isinstance(result, Position) else result.position
    assert position is not None
    return position


def check_position(position: Position, expect: dict[str, Any]) -> None:
    if "polygon" in expect:  # the circle around the polygon (a Prism's base): it holds every vertex
        for lat, lon in expect["polygon"]:
            assert distance_m(position.lat, position.lon, lat, lon) <= position.radius_m + 1e-6
        return
    assert (position.lat, position.lon) == pytest.approx((expect["lat"], expect["lon"]), abs=1e-9)
    if "radius" in expect:
        assert position.radius_m == pytest.approx(expect["radius"])
    if "radius_min" in expect:  # a conservative circle: at least what the peer's shape reaches
        assert position.radius_m >= expect["radius_min"] - 1e-6


@pytest.mark.parametrize("vector", [pytest.param(v, id=v["id"]) for v in VECTORS])
def test_a_vector_gives_the_peers_outcome_or_ours(vector: dict[str, Any]) -> None:
    expect = vector["expect"]
    wanted = OURS[vector["id"]] if vector.get("we_differ") else expect["outcome"]
    try:
        result = run(vector)
    except PARSER_ERRORS as exc:
        assert wanted == "reject", f"refused: {exc}"
        return
    assert outcome(result) == wanted
    if vector.get("we_differ") or wanted not in ("position", "fixes"):
        return
    if isinstance(result, PullAnswer):
        assert len(result.fixes) == expect["count"]
        assert result.best is not None
        check_position(position_of(result.best), expect["best"])
        return
    check_position(position_of(result), expect)
    if isinstance(result, AmlMessage):
        for key, value in expect.items():
            if key in ("confidence", "fix_time"):
                assert getattr(result, key) == (None if value is None else pytest.approx(value))
            elif key == "number":
                assert result.number == value


def test_the_vectors_are_all_there_and_our_differences_are_the_files() -> None:
    assert DATA["count"] == len(VECTORS) == 97
    assert {v["id"] for v in VECTORS if v.get("we_differ")} == set(OURS)
    assert {v["kind"] for v in VECTORS} == {"pidf", "location_info", "aml_sms", "aml_https", "aml_pull"}


def garbled(text: str) -> list[str]:
    """Truncations and small corruptions of an input, as a broken network would deliver them."""
    cuts = [text[: len(text) * k // 8] for k in range(1, 8)]
    swaps = [text.replace(a, b) for a, b in (('"', ""), (">", ""), ("=", ";"), (".", ","), ("1", "x"), (" ", "  "))]
    return [*cuts, *swaps, text + text, text.replace("4326", "4979"), text.replace("4979", "4326")]


def inputs(vector: dict[str, Any]) -> list[dict[str, Any]]:
    given = vector["input"]
    field = next((key for key in ("document", "text", "body") if key in given), None)
    if field is None:
        return []
    return [given | {field: variant} for variant in garbled(given[field])]


@pytest.mark.parametrize("vector", [pytest.param(v, id=v["id"]) for v in VECTORS])
def test_a_garbled_vector_raises_nothing_but_the_parsers_error(vector: dict[str, Any]) -> None:
    for given in inputs(vector):
        with contextlib.suppress(PARSER_ERRORS):
            run(vector | {"input": given})
