"""The overflow policy and the queue state it reads: table tests over frozen snapshots."""

from __future__ import annotations

import json

import pytest

from overflow.policy import DirectionRule, Plan, plan_moves, queue_position, spare_since
from overflow.state import DeskState, QueueView, SiteSnapshot, SnapshotError, Waiting, desk_state
from telephony import events

NOW = 1_700_000_000.0
RULE = DirectionRule(enabled=True, wait_threshold_s=10, all_busy_after_s=3, spare_for_s=1)
A, R, T, P, U = (DeskState.AVAILABLE, DeskState.RINGING, DeskState.TALKING, DeskState.PAUSED,
                 DeskState.UNAVAILABLE)  # fmt: skip


def caller(call_id: str, waited: float, **changes: object) -> Waiting:
    fields: dict[str, object] = {"uniqueid": call_id, "channel": f"PJSIP/carrier-{call_id}"} | changes
    return Waiting(call_id=call_id, since=NOW - waited, **fields)  # type: ignore[arg-type]


def site(name: str, desks: list[DeskState], waiting: list[Waiting] = (), connected: bool = True) -> SiteSnapshot:  # type: ignore[assignment]
    return SiteSnapshot(
        site=name, at=NOW, ami_connected=connected, waiting=tuple(sorted(waiting, key=lambda w: w.since)),
        desks=tuple((f"{name}-d{i}", state) for i, state in enumerate(desks)),
    )  # fmt: skip


def plan(
    local: SiteSnapshot,
    partner: SiteSnapshot | None,
    rule: DirectionRule = RULE,
    in_flight: frozenset[str] = frozenset(),
    spare_for: float = 5.0,
) -> Plan:
    return plan_moves(local, partner, rule, now=NOW, in_flight=in_flight, partner_spare_since=NOW - spare_for)


@pytest.mark.parametrize(
    ("local", "partner", "moved", "why_not"),
    [
        # the threshold: moved at 10 s even while a local desk is free (it is ringing for someone else)
        (site("jena", [A], [caller("c1", 11)]), site("gera", [A]), ["c1"], ""),
        (site("jena", [A], [caller("c1", 9)]), site("gera", [A]), [], "no caller waiting long enough"),
        # every local dispatcher busy: moved after 3 s
        (site("jena", [T, T], [caller("c1", 4)]), site("gera", [A]), ["c1"], ""),
        (site("jena", [T, P], [caller("c1", 2)]), site("gera", [A]), [], "no caller waiting long enough"),
        # the partner's spare dispatchers: available minus its own waiting callers
        (site("jena", [T], [caller("c1", 20), caller("c2", 15)]), site("gera", [A, A, T]), ["c1", "c2"], ""),
        (site("jena", [T], [caller("c1", 20), caller("c2", 15)]), site("gera", [A, T]), ["c1"],
         "partner's spare dispatchers all spoken for"),
        (site("jena", [T], [caller("c1", 20)]), site("gera", [A], [caller("g1", 1)]), [],
         "partner has no spare dispatcher"),
        (site("jena", [T], [caller("c1", 20)]), site("gera", [R, T, P, U]), [], "partner has no spare dispatcher"),
        # unknown or unhealthy partner: nothing moves
        (site("jena", [T], [caller("c1", 20)]), None, [], "partner unknown (not reporting)"),
        (site("jena", [T], [caller("c1", 20)]), site("gera", [A], connected=False), [],
         "partner's Asterisk is not connected to its service"),
        # moved at most once: callers the partner sent, or we moved before, stay
        (site("jena", [T], [caller("c1", 20, from_site="gera"), caller("c2", 20, moved=True)]), site("gera", [A]),
         [], "no caller waiting long enough"),
        # a caller a desk is ringing for stays (about to be answered here)
        (site("jena", [R], [caller("c1", 20, ringing=True), caller("c2", 12)]), site("gera", [A]), ["c2"], ""),
    ],
)  # fmt: skip
def test_who_is_moved(local: SiteSnapshot, partner: SiteSnapshot | None, moved: list[str], why_not: str) -> None:
    result = plan(local, partner)
    assert [m.call_id for m in result.moves] == moved
    assert result.why_not == why_not


def test_switched_off_direction_moves_nobody() -> None:
    rule = DirectionRule(enabled=False, wait_threshold_s=0, all_busy_after_s=0, spare_for_s=0)
    result = plan(site("jena", [T], [caller("c1", 60)]), site("gera", [A, A]), rule)
    assert result == Plan((), "overflow to the partner is switched off")


def test_moves_in_flight_use_up_the_partners_spare_dispatchers_and_are_not_moved_again() -> None:
    local = site("jena", [T], [caller("c1", 30), caller("c2", 20), caller("c3", 15)])
    result = plan(local, site("gera", [A, A]), in_flight=frozenset({"c1"}))
    assert [m.call_id for m in result.moves] == ["c2"]


def test_a_caller_whose_move_was_tried_is_not_tried_again_but_uses_up_nothing() -> None:
    local = site("jena", [T], [caller("c1", 30), caller("c2", 20), caller("c3", 15)])
    result = plan_moves(local, site("gera", [A, A]), RULE, now=NOW, in_flight=frozenset(),
                        partner_spare_since=NOW - 5, tried=frozenset({"c1"}))  # fmt: skip
    assert [m.call_id for m in result.moves] == ["c2", "c3"]


def test_hysteresis_the_partner_must_have_been_free_for_a_while() -> None:
    local = site("jena", [T], [caller("c1", 30)])
    assert plan(local, site("gera", [A]), spare_for=0.5).moves == ()
    assert [m.call_id for m in plan(local, site("gera", [A]), spare_for=1.0).moves] == ["c1"]


@pytest.mark.parametrize(
    ("previous", "partner", "in_flight", "expected"),
    [
        (None, site("gera", [A]), 0, NOW),  # spare from now on
        (NOW - 4, site("gera", [A]), 0, NOW - 4),  # still spare: the streak goes on
        (NOW - 4, site("gera", [A]), 1, None),  # spoken for by a move: the streak breaks
        (NOW - 4, site("gera", [T]), 0, None),
        (NOW - 4, None, 0, None),
        (NOW - 4, site("gera", [A], connected=False), 0, None),
    ],
)
def test_spare_since(previous: float | None, partner: SiteSnapshot | None, in_flight: int, expected: float) -> None:
    assert spare_since(previous, partner, in_flight, NOW) == expected


def test_a_moved_caller_keeps_seniority_on_both_sides() -> None:
    # at Gera c9 waits 5 s and g2 2 s; Jena's c1 has waited 4 s: it goes between them
    local = site("jena", [T], [caller("c0", 8, moved=True), caller("c1", 4)])
    partner = site("gera", [A, A, A], [caller("g9", 5), caller("g2", 2)])
    (move,) = plan(local, partner).moves
    assert (move.partner_position, move.return_position) == (2, 2)
    assert queue_position((), NOW) == 1


# -- the queue state -----------------------------------------------------------------

S = events.MemberStatus


@pytest.mark.parametrize(
    ("status", "paused", "in_call", "expected"),
    [
        (S.NOT_INUSE, False, False, A), (S.NOT_INUSE, True, False, P), (S.INUSE, False, True, T),
        (S.NOT_INUSE, False, True, T), (S.RINGING, False, False, R), (S.UNAVAILABLE, False, False, U),
        (S.INVALID, True, False, U), (S.UNKNOWN, False, False, U), (S.ONHOLD, False, True, T),
    ],
)  # fmt: skip
def test_desk_state(status: events.MemberStatus, paused: bool, in_call: bool, expected: DeskState) -> None:
    assert desk_state(status, paused, in_call) is expected


def call(kind: type, uniqueid: str, **fields: object) -> events.CallEvent:
    return kind(site="jena", call_id=f"id-{uniqueid}", uniqueid=uniqueid, linkedid=uniqueid, **fields)  # type: ignore[no-any-return]


def test_queue_view_follows_callers_and_desks() -> None:
    view = QueueView("jena", "gera", "112-jena")
    view.apply(events.DispatcherStateChanged("jena", "112-jena", "jena-d1", "PJSIP/jena-d1", S.INUSE, False, True), NOW)
    view.apply(call(events.CallerJoinedQueue, "u1", queue="112-jena", position=1, caller_number="+49", from_site="",
                    channel="PJSIP/carrier-1", at=NOW - 5), NOW)  # fmt: skip
    view.apply(call(events.CallerJoinedQueue, "u2", queue="112-jena", position=2, caller_number="+49",
                    from_site="gera", channel="PJSIP/intersite-2", at=NOW - 1), NOW)  # fmt: skip
    view.apply(call(events.CallerJoinedQueue, "x", queue="other", position=1, caller_number="", from_site=""), NOW)
    view.apply(call(events.DispatcherRinging, "u1", queue="112-jena", dispatcher="jena-d1", interface=""), NOW)
    snap = view.snapshot(NOW, True)
    expected = [("id-u1", True, ""), ("id-u2", False, "gera")]
    assert [(w.call_id, w.ringing, w.from_site) for w in snap.waiting] == expected
    assert snap.desks == (("jena-d1", T),)
    assert [a.call_id for a in snap.arrivals] == ["id-u2"]
    assert snap.longest_wait(NOW) == 5

    view.apply(call(events.DispatcherNotAnswering, "u1", queue="112-jena", dispatcher="jena-d1"), NOW)
    assert view.snapshot(NOW, True).waiting[0].ringing is False
    view.apply(call(events.CallerLeftQueue, "u1", queue="112-jena"), NOW)
    view.apply(call(events.ChannelHungUp, "u2", channel="PJSIP/intersite-2", cause=16), NOW)
    later = view.snapshot(NOW + 61, True)
    assert later.waiting == ()
    assert later.arrivals == ()  # remembered for a minute


def test_queue_view_rebuilt_from_queue_status_keeps_partner_callers_put() -> None:
    view = QueueView("jena", "gera", "112-jena")
    view.apply(call(events.CallerJoinedQueue, "old", queue="112-jena", position=1, caller_number="", from_site=""),
               NOW)  # fmt: skip
    view.reset(
        [
            call(events.CallerWaiting, "u1", queue="112-jena", position=1, channel="PJSIP/carrier-1", wait_s=12),
            call(events.CallerWaiting, "u2", queue="112-jena", position=2, channel="PJSIP/intersite-9", wait_s=3),
            call(
                events.CallerWaiting,
                "u3",
                queue="112-jena",
                position=3,
                channel="PJSIP/carrier-3",
                wait_s=2,
                moved=True,
            ),
            events.DispatcherStateChanged("jena", "112-jena", "jena-d1", "PJSIP/jena-d1", S.NOT_INUSE, True, False),
        ],
        NOW,
    )
    snap = view.snapshot(NOW, True)
    assert [(w.uniqueid, w.since, w.movable) for w in snap.waiting] == [
        ("u1", NOW - 12, True),
        ("u2", NOW - 3, False),
        ("u3", NOW - 2, False),
    ]
    assert snap.desks == (("jena-d1", P),)


def test_snapshot_round_trip_leaves_out_channels() -> None:
    snap = site("gera", [A, T], [caller("g1", 3, from_site="jena")])
    data = json.loads(json.dumps(snap.to_json()))
    assert "channel" not in data["waiting"][0]
    back = SiteSnapshot.from_json(data, NOW + 1, max_age_s=2)
    assert back.available == 1 and back.waiting[0].from_site == "jena" and back.waiting[0].channel == ""


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"at": NOW - 3}, "old"),  # stale: the partner is unknown, never idle
        ({"waiting": "x"}, "malformed"),
        ({"desks": {"d1": "sleeping"}}, "malformed"),
        ({"at": "nan"}, "malformed"),
        ({"at": None}, "malformed"),
    ],
)
def test_a_stale_or_malformed_partner_snapshot_is_refused(data: dict[str, object], problem: str) -> None:
    good = site("gera", [A]).to_json()
    with pytest.raises(SnapshotError, match=problem):
        SiteSnapshot.from_json(good | data, NOW, max_age_s=2)
    with pytest.raises(SnapshotError):
        SiteSnapshot.from_json("not a mapping", NOW, max_age_s=2)
