"""The call card a dispatcher sees when answering, built from what the Verbund knows.

Pure: the screen pops (verbund112.features.screen_pops) read the store and AMI and hand the pieces
in, with the district lookup of the rules in force (routing.decision.Places).
Location is supplemental data: every location carries its source, radius,
age, district and responsible centre (and its altitude in metres, None where
the source gave none), and the dispatcher takes it over into the incident with
a click. A civic address (source "civic") carries its lines with German labels
instead of a position.
"""

from __future__ import annotations

from typing import Any

from routing.decision import Place, Places
from routing.location import CivicAddress

REPEAT_WINDOW_S = 30 * 60


def _where(place: Place | None) -> dict[str, Any]:
    """District and centre fields of a location (None where unknown: outside every district, no rules)."""
    if place is None:
        return {"district": None, "ags": None, "centre": None, "centre_name": None, "uncertain_border": False}
    return {"district": place.district, "ags": place.ags, "centre": place.centre, "centre_name": place.centre_name,
            "uncertain_border": place.uncertain_border}  # fmt: skip


def location_from_aml(fix: dict[str, Any], now: float, places: Places | None = None) -> dict[str, Any]:
    lat, lon, radius = fix["lat"], fix["lon"], fix["radius_m"]
    place = None
    if places is not None:
        try:
            place = places.at(float(lat), float(lon), float(radius))
        except (TypeError, ValueError):  # a garbled fix in the store: shown as it is, without a district
            place = None
    return {
        "source": "aml",
        "lat": lat,
        "lon": lon,
        "radius_m": radius,
        "method": fix.get("method", ""),
        "altitude_m": fix.get("altitude_m"),
        "confidence": fix.get("confidence"),
        "age_s": max(0.0, now - float(fix.get("time") or now)),
        "fix_time": fix.get("time"),  # to tell a fix read again after a failover from the one shown
        **_where(place),
    }


def location_from_record(
    record: dict[str, Any], routed_at: float, now: float, places: Places | None = None
) -> dict[str, Any] | None:
    used = record.get("location")
    if not used:
        return None
    position = used.get("position")
    ags = used.get("ags")
    where = _where(None if places is None or not ags else places.of(ags))
    # the district the routing found stays (the rules may have changed since); the centre is today's
    location = where | {
        "source": used["source"],
        "district": used.get("district"),
        "ags": ags,
        "age_s": max(0.0, now - routed_at),
    }
    if "share" in used and places is not None:
        location["uncertain_border"] = float(used["share"]) < places.rules.spec.areas.certain_share
    if position:
        location |= {"lat": position["lat"], "lon": position["lon"], "radius_m": position["radius_m"],
                     "method": position.get("method", ""), "altitude_m": position.get("altitude_m")}  # fmt: skip
    if used["source"] == "civic":
        location["address"] = address_lines(record.get("address"))
    return location


def address_lines(elements: dict[str, str] | None) -> list[list[str]]:
    """A civic address as [German label, value] pairs (routing.location.CivicAddress.lines)."""
    if not elements:
        return []
    return [[label, value] for label, value in CivicAddress(tuple(elements.items())).lines()]


def location_from_address(record: dict[str, Any], routed_at: float, now: float) -> dict[str, Any]:
    """The civic address of a call whose routing used another source: shown, without a district."""
    return _where(None) | {"source": "civic", "address": address_lines(record.get("address")),
                           "age_s": max(0.0, now - routed_at)}  # fmt: skip


def build_card(
    *,
    call_id: str,
    answered_site: str,
    dispatcher: str,
    caller_number: str,
    from_site: str,
    wait_s: int,
    record: dict[str, Any] | None,
    aml_trail: list[dict[str, Any]],
    earlier_calls: list[dict[str, Any]],
    now: float,
    places: Places | None = None,
) -> dict[str, Any]:
    """The card for the dispatcher who answered; locations best first (newest AML fix, then routing)."""
    locations = []
    if aml_trail:
        locations.append(location_from_aml(aml_trail[0], now, places))
    if record is not None:
        routed_at = float(record.get("routed_at", now))
        routed = location_from_record(record, routed_at, now, places)
        if routed is not None and not (routed["source"] == "aml" and aml_trail):
            locations.append(routed)
        if record.get("address") and (routed is None or routed["source"] != "civic"):
            locations.append(location_from_address(record, routed_at, now))
    return {
        "type": "card",
        "call_id": call_id,
        "caller": (record or {}).get("caller") or caller_number,
        "answered_site": answered_site,
        "dispatcher": dispatcher,
        "entry_site": (record or {}).get("entry_site", from_site or answered_site),
        "overflowed_from": from_site or None,
        "wait_s": wait_s,
        "routing": None if record is None else {
            "centre": record.get("routed_to"), "reason": record.get("reason"), "certain": record.get("certain"),
            "flags": record.get("flags", []),
        },
        "locations": locations,
        "repeat_calls": [
            {"call_id": c["call_id"], "at": c["at"], "minutes_ago": round((now - c["at"]) / 60)}
            for c in earlier_calls
            if c["call_id"] != call_id and now - c["at"] <= REPEAT_WINDOW_S
        ],
    }  # fmt: skip
