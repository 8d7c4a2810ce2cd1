"""Callers going round between the sites: the pure tracker and what the supervisor view shows of it."""

from __future__ import annotations

import json

from overflow.circling import Circling, CirclingTracker
from overflow.state import SiteSnapshot
from overflow.supervision import supervisor_json

NOW = 1_700_000_000.0


def tracker() -> CirclingTracker:
    return CirclingTracker(alarm_after_s=60, forget_after_s=300)


def test_a_caller_counts_from_their_first_round_until_answered() -> None:
    circling = tracker()
    assert circling.went_round("jena-1.1", 1, NOW - 25, NOW) is True
    assert circling.went_round("jena-1.1", 2, NOW - 25, NOW + 20) is False
    view = circling.view(NOW + 20)
    assert [(c.call_id, c.rounds) for c in view.callers] == [("jena-1.1", 2)]
    assert (view.longest_s, view.alarm) == (45, False)
    assert circling.done("jena-1.1") is True
    assert circling.view(NOW + 21).callers == ()
    assert circling.done("jena-1.1") is False


def test_the_alarm_goes_off_when_a_caller_goes_round_longer_than_the_threshold() -> None:
    circling = tracker()
    circling.went_round("jena-1.1", 1, NOW - 10, NOW)
    circling.went_round("jena-1.2", 3, NOW - 61, NOW)
    view = circling.view(NOW)
    assert [c.call_id for c in view.callers] == ["jena-1.2", "jena-1.1"]  # longest first
    assert view.alarm is True and view.longest_s == 61


def test_a_caller_whose_end_was_missed_is_forgotten_and_comes_back_at_the_next_round() -> None:
    circling = tracker()
    circling.went_round("jena-1.1", 1, NOW - 5, NOW)
    assert circling.view(NOW + 301).callers == ()
    assert [c.call_id for c in circling.expire(NOW + 301)] == ["jena-1.1"]
    circling.went_round("jena-1.1", 9, NOW - 5, NOW + 400)  # still going round: the true wait again
    assert circling.view(NOW + 400).longest_s == 405


def test_after_a_reconnect_nobody_is_counted_until_their_next_round() -> None:
    circling = tracker()
    circling.went_round("jena-1.1", 1, NOW - 5, NOW)
    circling.forget_all()
    assert len(circling) == 0


def test_an_entry_time_in_the_future_or_missing_counts_from_now() -> None:
    circling = tracker()
    circling.went_round("jena-1.1", 1, NOW + 50, NOW)
    circling.went_round("jena-1.2", 1, 0, NOW)
    assert circling.view(NOW).longest_s == 0


def test_both_centres_callers_going_round_reach_the_supervisor_view_through_the_snapshot() -> None:
    own = SiteSnapshot("jena", NOW, True, (), (), (), (Circling("jena-1.1", NOW - 70, 4, NOW - 2),))
    partner = SiteSnapshot.from_json(json.loads(json.dumps(own.to_json())) | {"site": "gera"}, NOW, 1.5)
    assert partner.circling == own.circling
    view = supervisor_json(own=own, partner=partner, partner_site="gera", partner_problem="", moves=[],
                           moves_problem="", why_no_move="", now=NOW, circling_alarm_after_s=60)  # fmt: skip
    for site in ("jena", "gera"):
        shown = view["sites"][site]["circling"]
        assert (shown["count"], shown["longest_s"], shown["alarm"]) == (1, 70, True)
        assert shown["callers"] == [{"call_id": "jena-1.1", "rounds": 4, "wait_s": 70}]


def test_a_snapshot_of_an_older_partner_without_circling_is_read() -> None:
    data = SiteSnapshot("gera", NOW, True, (), ()).to_json()
    del data["circling"]
    assert SiteSnapshot.from_json(data, NOW, 1.5).circling == ()
