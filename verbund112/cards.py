"""The call card a dispatcher sees when answering, built from what the Verbund knows.

Pure: the tracker (verbund112.calls) reads Redis and AMI and hands the pieces
in. Location is supplemental data: every location carries its source, radius
and age, and the dispatcher takes it over into the incident with a click.
"""

from __future__ import annotations

from typing import Any

REPEAT_WINDOW_S = 30 * 60


def location_from_aml(fix: dict[str, Any], now: float) -> dict[str, Any]:
    return {
        "source": "aml",
        "lat": fix["lat"],
        "lon": fix["lon"],
        "radius_m": fix["radius_m"],
        "method": fix.get("method", ""),
        "confidence": fix.get("confidence"),
        "age_s": max(0.0, now - float(fix.get("time") or now)),
    }


def location_from_record(record: dict[str, Any], routed_at: float, now: float) -> dict[str, Any] | None:
    used = record.get("location")
    if not used:
        return None
    position = used.get("position")
    location = {
        "source": used["source"],
        "district": used.get("district"),
        "ags": used.get("ags"),
        "age_s": max(0.0, now - routed_at),
    }
    if position:
        location |= {"lat": position["lat"], "lon": position["lon"], "radius_m": position["radius_m"],
                     "method": position.get("method", "")}  # fmt: skip
    return location


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
) -> dict[str, Any]:
    """The card for the dispatcher who answered; locations best first (newest AML fix, then routing)."""
    locations = []
    if aml_trail:
        locations.append(location_from_aml(aml_trail[0], now))
    if record is not None:
        routed = location_from_record(record, float(record.get("routed_at", now)), now)
        if routed is not None and not (routed["source"] == "aml" and aml_trail):
            locations.append(routed)
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
