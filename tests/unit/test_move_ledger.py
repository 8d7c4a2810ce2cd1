"""The move ledger: each overflow move ends in exactly one outcome (pure, no I/O)."""

from __future__ import annotations

from overflow.moves import MoveLedger
from overflow.policy import Move
from overflow.state import Arrival, SiteSnapshot


def move(call_id: str, uniqueid: str | None = None) -> Move:
    return Move(call_id, uniqueid or call_id, f"PJSIP/carrier-{call_id}", "waited 30 s", 2, 1)


def partner_with(*arrivals: Arrival) -> SiteSnapshot:
    return SiteSnapshot("gera", 100.0, True, (), (), arrivals)


def started(*call_ids: str, at: float = 100.0) -> MoveLedger:
    ledger = MoveLedger("jena", "gera")
    for call_id in call_ids:
        ledger.start(move(call_id), at)
    return ledger


def test_a_move_the_partner_lists_as_arrived_from_here_is_moved() -> None:
    ledger = started("jena-1")
    done = ledger.partner_report(partner_with(Arrival("jena-1", "jena", 101.0)))
    assert [(o.call_id, o.outcome, o.from_site, o.to_site, o.started) for o in done] == [
        ("jena-1", "moved", "jena", "gera", 100.0)
    ]
    assert ledger.in_flight == frozenset()
    assert ledger.tried == {"jena-1"}


def test_an_arrival_from_another_site_or_of_another_call_confirms_nothing() -> None:
    ledger = started("jena-1")
    assert ledger.partner_report(partner_with(Arrival("jena-1", "erfurt", 101.0), Arrival("jena-2", "jena", 1))) == []
    assert ledger.partner_report(None) == []
    assert ledger.in_flight == {"jena-1"}


def test_a_caller_back_in_our_queue_was_returned() -> None:
    ledger = started("jena-1")
    outcome = ledger.returned("jena-1")
    assert outcome is not None and outcome.outcome == "returned"
    assert ledger.returned("jena-1") is None  # one outcome per move


def test_asterisk_refusing_the_withdraw_is_refused() -> None:
    ledger = started("jena-1")
    outcome = ledger.refused("jena-1", "Unable to withdraw")
    assert outcome is not None and outcome.outcome == "refused" and "Unable to withdraw" in outcome.detail


def test_only_the_moved_callers_own_channel_hanging_up_ends_the_move() -> None:
    ledger = MoveLedger("jena", "gera")
    ledger.start(move("jena-1", uniqueid="jena-1.5"), 100.0)
    assert ledger.hung_up("jena-1", "jena-1.6") is None  # another leg of the call (the trunk)
    outcome = ledger.hung_up("jena-1", "jena-1.5")
    assert outcome is not None and outcome.outcome == "hung-up"


def test_a_move_nobody_confirms_in_time_is_unconfirmed_and_never_tried_again_within_the_hour() -> None:
    ledger = started("jena-1", "jena-2")
    assert ledger.expire(105.0, confirm_within_s=10) == []
    done = ledger.expire(111.0, confirm_within_s=10)
    assert sorted(o.call_id for o in done) == ["jena-1", "jena-2"]
    assert {o.outcome for o in done} == {"unconfirmed"}
    assert ledger.tried == {"jena-1", "jena-2"}
    ledger.expire(100.0 + 3601, confirm_within_s=10)
    assert ledger.tried == frozenset()


def test_the_policy_reason_travels_with_the_outcome() -> None:
    ledger = started("jena-1")
    outcome = ledger.returned("jena-1")
    assert outcome is not None and outcome.reason == "waited 30 s"
