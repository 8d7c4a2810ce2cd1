"""The call ledger: what a site knows of its calls, from routing to hangup (pure, no I/O)."""

from __future__ import annotations

from verbund112.features.call_ledger import CallLedger
from verbund112.store.records import CallRecord


def record(call_id: str, caller: str = "+4936411234") -> CallRecord:
    return CallRecord(call_id=call_id, routed_at=100.0, entry_site="jena", caller=caller, route="local")


def test_a_call_answered_here_is_done_at_hangup() -> None:
    ledger = CallLedger()
    ledger.entered("jena-1.1", "jena-1.1", "+4936411234", 100.0, record("jena-1.1"))
    ledger.answered("jena-1.1")
    assert ledger.hung_up("jena-1.1") is None
    assert len(ledger) == 0


def test_a_call_nobody_answered_here_is_handed_back_for_the_abandoned_check() -> None:
    ledger = CallLedger()
    ledger.entered("jena-1.2", "jena-1.2", "+4915112345678", 100.0, None)
    entry = ledger.hung_up("jena-1.2")
    assert entry is not None
    assert (entry.call_id, entry.caller, entry.at) == ("jena-1.2", "+4915112345678", 100.0)
    assert ledger.hung_up("jena-1.2") is None  # a second hangup event of the same channel: nothing


def test_a_call_moved_and_answered_at_the_partner_needs_the_store_to_decide() -> None:
    """The partner answered: no answer here, so the entry is checked against the store (answered mark)."""
    ledger = CallLedger()
    ledger.entered("jena-1.3", "jena-1.3", "+4936411234", 100.0, record("jena-1.3"))
    ledger.answered("gera-9.9")  # a call of the partner answered here: not ours, no effect on ours
    entry = ledger.hung_up("jena-1.3")
    assert entry is not None and entry.call_id == "jena-1.3"


def test_hangups_of_other_channels_are_ignored() -> None:
    ledger = CallLedger()
    ledger.entered("jena-1.4", "jena-1.4", "+4936411234", 100.0, None)
    assert ledger.hung_up("jena-1.5") is None  # the desk's channel, a trunk leg
    assert len(ledger) == 1


def test_answers_of_calls_that_did_not_enter_here_leave_nothing_behind() -> None:
    ledger = CallLedger()
    for i in range(100):
        ledger.answered(f"gera-{i}")
    ledger.entered("jena-1.6", "jena-1.6", "+4936411234", 100.0, None)
    assert ledger.hung_up("jena-1.6") is not None  # not mistaken for answered here


def test_the_record_of_a_call_routed_here_is_known_without_the_store() -> None:
    ledger = CallLedger()
    ledger.entered("jena-1.7", "jena-1.7", "+4936411234", 100.0, record("jena-1.7"))
    known = ledger.record_of("jena-1.7")
    assert known is not None and known.call_id == "jena-1.7"
    assert ledger.record_of("gera-2.1") is None
    ledger.hung_up("jena-1.7")
    assert ledger.record_of("jena-1.7") is None


def test_a_missed_hangup_is_forgotten_after_the_maximum_age_and_said() -> None:
    ledger = CallLedger(max_age_s=3600)
    ledger.entered("jena-1.8", "jena-1.8", "+4936411234", 100.0, None)
    ledger.entered("jena-1.9", "jena-1.9", "+4936411234", 3000.0, None)
    assert ledger.expire(3000.0) == []
    lost = ledger.expire(3701.0)
    assert [entry.call_id for entry in lost] == ["jena-1.8"]
    assert len(ledger) == 1
    assert ledger.hung_up("jena-1.8") is None


def test_a_card_stays_until_its_call_completes_and_only_that_call_ends_it() -> None:
    ledger = CallLedger()
    ledger.show("jena-d1", {"call_id": "jena-2.1", "caller": "+4936411234", "locations": []})
    assert ledger.completed("jena-2.2", "jena-d1") is False
    assert ledger.card_of("jena-d1") is not None
    assert ledger.completed("jena-2.1", "jena-d2") is False
    assert ledger.completed("jena-2.1", "jena-d1") is True
    assert ledger.card_of("jena-d1") is None


def test_a_new_position_replaces_the_old_one_of_its_source_on_the_cards_of_that_number() -> None:
    ledger = CallLedger()
    routed = {"source": "pidf", "lat": 50.9}
    old_aml = {"source": "aml", "lat": 50.8}
    ledger.show("jena-d1", {"call_id": "jena-3.1", "caller": "+4915112345678", "locations": [old_aml, routed]})
    ledger.show("jena-d2", {"call_id": "jena-3.2", "caller": "+4936411234", "locations": []})
    assert ledger.holders("+4915112345678") == ["jena-d1"]
    card = ledger.new_location("jena-d1", {"source": "aml", "lat": 50.7})
    assert card["locations"] == [{"source": "aml", "lat": 50.7}, routed]


def test_a_second_routing_of_a_call_id_keeps_the_first_entry() -> None:
    """As the store keeps the first record, the ledger keeps the first entry (the card shows it)."""
    ledger = CallLedger()
    assert ledger.entered("jena-1.5", "jena-1.5", "+4936411234", 100.0, record("jena-1.5"))
    assert not ledger.entered("jena-9.9", "jena-1.5", "+4915199999999", 101.0, record("jena-1.5", "+4915199999999"))
    kept = ledger.record_of("jena-1.5")
    assert kept is not None and kept.caller == "+4936411234"
    assert len(ledger) == 1
