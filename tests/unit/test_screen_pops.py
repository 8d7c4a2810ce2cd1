"""The screen-pop driver at its seams: a fake store and fake screens (the lab tests run the real ones)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import prometheus_client as prom
import pytest

from routing.decision import Decision, Route
from telephony import events
from verbund112.features import claims
from verbund112.features.hub import CallRouted, EventHub
from verbund112.features.screen_pops import ScreenPops
from verbund112.store import Announcement, CardData, Resubscribed, StoreError
from verbund112.store.records import AbandonedCall, AmlFixRecord, AnsweredMark, CallRecord, EarlierCall

NOW = 1_800_000_000.0


class FakeStore:
    def __init__(self, *, down: bool = False, records: dict[str, CallRecord] | None = None) -> None:
        self.down = down
        self.records = records or {}
        self.card_reads: list[dict[str, Any]] = []
        self.abandoned: list[AbandonedCall] = []

    def _check(self) -> None:
        if self.down:
            raise StoreError("connection refused")

    async def answered_card_data(
        self, call_id: str, mark: AnsweredMark, number: str | None, *, need_record: bool, since: float, most: int
    ) -> CardData:
        self._check()
        self.card_reads.append({"call_id": call_id, "number": number, "need_record": need_record, "mark": mark})
        record = CallRecord(call_id=call_id, routed_at=NOW - 20, entry_site="gera", caller=number or "", route="local",
                            routed_to="gera", reason="from the store")  # fmt: skip
        return CardData(record if need_record else None, [], [EarlierCall(call_id="gera-0.1", at=NOW - 120)])

    async def aml_and_earlier(
        self, number: str, since: float, most: int
    ) -> tuple[list[AmlFixRecord], list[EarlierCall]]:
        raise AssertionError("not needed when the numbers agree")

    async def aml_trail(self, e164: str) -> list[AmlFixRecord]:
        return []

    async def load_call(self, call_id: str) -> CallRecord | None:
        self._check()
        return self.records.get(call_id)

    async def abandoned_calls(self) -> list[AbandonedCall]:
        return list(self.abandoned)

    async def callback_done(self, call_id: str) -> bool:
        return False

    async def announcements(self) -> AsyncIterator[Announcement]:
        return
        yield


class FakeScreens:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def send(self, dispatcher: str, message: dict[str, Any]) -> int:
        self.sent.append((dispatcher, message))
        return 1

    def broadcast(self, message: dict[str, Any]) -> None:
        self.sent.append(("*", message))


def pops_with(store: FakeStore) -> tuple[ScreenPops, FakeScreens, prom.CollectorRegistry]:
    screens, registry = FakeScreens(), prom.CollectorRegistry()
    pops = ScreenPops(site="jena", partner="gera", store=store, screens=screens, hub=EventHub(), places=lambda: None,
                      registry=registry, clock=lambda: NOW)  # fmt: skip
    return pops, screens, registry


def routed(call_id: str, caller: str = "+4936411234") -> CallRouted:
    decision = Decision(Route.LOCAL, "jena", "112-jena", None, "Ortsnetz Jena", None, True, caller)
    record = CallRecord(call_id=call_id, routed_at=NOW - 30, entry_site="jena", caller=caller, route="local",
                        routed_to="jena", reason="Ortsnetz Jena", certain=True)  # fmt: skip
    return CallRouted("jena", call_id, call_id, caller, None, "", decision, record)


def answered(
    call_id: str, dispatcher: str = "jena-d1", caller: str = "+4936411234", *, leg: str | None = None
) -> events.DispatcherAnswered:
    """A dispatcher here answered: a call that entered here, or (leg: its Uniqueid) a partner's leg claiming call_id."""
    uniqueid, channel, from_site = (call_id, "PJSIP/carrier-01", "") if leg is None else (
        leg, "PJSIP/intersite-0000002a", "gera")  # fmt: skip
    return events.DispatcherAnswered("jena", call_id, uniqueid, uniqueid, "112-jena", dispatcher, f"PJSIP/{dispatcher}",
                                     f"PJSIP/{dispatcher}-01", 12, 3, caller, from_site, NOW - 1, channel)  # fmt: skip


def gera_record(call_id: str, caller: str = "+4936411234", entry_site: str = "gera") -> CallRecord:
    return CallRecord(call_id=call_id, routed_at=NOW - 20, entry_site=entry_site, caller=caller, route="partner",
                      routed_to="jena", reason="recorded at the entry site")  # fmt: skip


def hung_up(uniqueid: str) -> events.ChannelHungUp:
    return events.ChannelHungUp("jena", uniqueid, uniqueid, uniqueid, "PJSIP/carrier-01", 16)


def pops_counted(registry: prom.CollectorRegistry, data: str) -> float | None:
    return registry.get_sample_value("verbund112_screen_pops_total", {"data": data})


async def test_a_call_routed_here_gets_its_card_in_one_store_round_trip_without_reading_its_record() -> None:
    store = FakeStore()
    pops, screens, registry = pops_with(store)
    await pops.on_event(routed("jena-1.1"))
    await pops.on_event(answered("jena-1.1"))
    assert [(r["call_id"], r["number"], r["need_record"]) for r in store.card_reads] == [
        ("jena-1.1", "+4936411234", False)
    ]
    dispatcher, card = screens.sent[0]
    assert dispatcher == "jena-d1"
    assert card["routing"]["reason"] == "Ortsnetz Jena"  # from what this site knew, not the store
    assert [c["call_id"] for c in card["repeat_calls"]] == ["gera-0.1"]
    assert pops.card_of("jena-d1") == card
    assert pops_counted(registry, "store") == 1


async def test_a_call_of_the_partner_is_checked_against_the_entry_sites_record_and_gets_its_card() -> None:
    store = FakeStore(records={"gera-2.1": gera_record("gera-2.1", caller="036411234")})
    pops, screens, registry = pops_with(store)
    await pops.on_event(answered("gera-2.1", caller="+4936411234", leg="jena-9.9"))
    # the record the check read is the card's; the claimed call, now checked, is marked answered
    assert [(r["call_id"], r["need_record"]) for r in store.card_reads] == [("gera-2.1", False)]
    card = screens.sent[0][1]
    assert (card["call_id"], card["routing"]["reason"]) == ("gera-2.1", "recorded at the entry site")
    assert registry.get_sample_value("verbund112_intersite_claims_refused_total", {"reason": "caller"}) is None


async def test_a_local_call_whose_record_is_not_in_the_ledger_reads_it_from_the_store() -> None:
    store = FakeStore()
    pops, screens, _ = pops_with(store)
    await pops.on_event(answered("jena-2.2"))  # routed by the dialplan alone, or before a restart
    assert store.card_reads[0]["need_record"] is True
    assert screens.sent[0][1]["routing"]["reason"] == "from the store"


async def test_with_the_store_down_the_card_still_goes_out_with_what_this_site_knows() -> None:
    pops, screens, registry = pops_with(FakeStore(down=True))
    await pops.on_event(routed("jena-3.1"))
    await pops.on_event(answered("jena-3.1"))
    card = screens.sent[0][1]
    assert (card["call_id"], card["caller"], card["routing"]["centre"]) == ("jena-3.1", "+4936411234", "jena")
    assert pops_counted(registry, "local-only") == 1


async def test_a_hangup_only_ends_the_call_in_the_ledger_without_asking_the_store() -> None:
    # whether the call was abandoned is the dialplan's report (features/abandoned_calls.py)
    pops, _, _ = pops_with(FakeStore(down=True))
    await pops.on_event(routed("jena-4.1", caller="015112345678"))
    await pops.on_event(hung_up("jena-4.1"))
    assert len(pops.ledger) == 0


async def test_a_call_answered_here_is_not_asked_about_and_its_card_ends_with_it() -> None:
    store = FakeStore(down=True)  # nothing may need the store here
    pops, screens, _ = pops_with(FakeStore())
    await pops.on_event(routed("jena-6.1"))
    await pops.on_event(answered("jena-6.1"))
    pops._store = store
    await pops.on_event(
        events.CallCompleted("jena", "jena-6.1", "jena-6.1", "jena-6.1", "112-jena", "jena-d1", 30, "caller")
    )
    await pops.on_event(hung_up("jena-6.1"))
    assert screens.sent[-1] == ("jena-d1", {"type": "call-ended", "call_id": "jena-6.1"})
    assert pops.card_of("jena-d1") is None


def refused(registry: prom.CollectorRegistry, reason: str) -> float | None:
    return registry.get_sample_value("verbund112_intersite_claims_refused_total", {"reason": reason})


async def test_a_leg_claiming_a_call_waiting_here_gets_no_card_of_it_and_does_not_mark_it_answered() -> None:
    store = FakeStore(records={"jena-7.1": gera_record("jena-7.1", entry_site="jena")})
    pops, screens, registry = pops_with(store)
    await pops.on_event(routed("jena-7.1", caller="+4936417777"))
    await pops.on_event(answered("jena-7.1", caller="+4936417777", leg="jena-7.9"))
    card = screens.sent[0][1]
    assert card["call_id"] == "jena-7.9"  # the leg's own id, nothing of the claimed call
    assert card["routing"] is None and card["repeat_calls"] == []
    assert store.card_reads == []  # the claimed call is not marked answered
    assert refused(registry, "entry-site") == 1
    assert pops_counted(registry, "local-only") == 1
    # the ghost's card ends with the ghost
    await pops.on_event(
        events.CallCompleted("jena", "jena-7.1", "jena-7.9", "jena-7.9", "112-jena", "jena-d1", 5, "caller")
    )
    assert screens.sent[-1] == ("jena-d1", {"type": "call-ended", "call_id": "jena-7.9"})


async def test_a_claim_of_an_unknown_call_or_of_another_callers_call_is_refused_and_counted() -> None:
    store = FakeStore(records={"gera-8.1": gera_record("gera-8.1", caller="+4936418888")})
    pops, screens, registry = pops_with(store)
    await pops.on_event(answered("gera-8.0", dispatcher="jena-d1", leg="jena-8.8"))
    await pops.on_event(answered("gera-8.1", dispatcher="jena-d2", caller="+4915199999999", leg="jena-8.9"))
    assert [(d, m["call_id"]) for d, m in screens.sent] == [("jena-d1", "jena-8.8"), ("jena-d2", "jena-8.9")]
    assert store.card_reads == []
    assert (refused(registry, "unknown-call"), refused(registry, "caller")) == (1, 1)


async def test_a_local_call_whose_call_id_is_not_its_channels_own_is_refused() -> None:
    store = FakeStore()
    pops, screens, registry = pops_with(store)
    event = answered("jena-9.1")
    await pops.on_event(dataclasses.replace(event, uniqueid="jena-9.2"))
    assert screens.sent[0][1]["call_id"] == "jena-9.2"
    assert store.card_reads == []
    assert refused(registry, "not-own") == 1


async def test_with_the_store_down_a_claim_cannot_be_checked_and_nothing_of_the_claimed_call_is_shown() -> None:
    pops, screens, registry = pops_with(FakeStore(down=True))
    await pops.on_event(answered("gera-10.1", leg="jena-10.9"))
    assert screens.sent[0][1]["call_id"] == "jena-10.9"
    assert pops_counted(registry, "local-only") == 1


@pytest.mark.parametrize(
    ("record", "caller", "problem"),
    [
        (None, "+4936411234", claims.Refusal.UNKNOWN_CALL),
        (gera_record("c", entry_site="jena"), "+4936411234", claims.Refusal.ENTRY_SITE),
        (gera_record("c", entry_site="weimar"), "+4936411234", claims.Refusal.ENTRY_SITE),
        (gera_record("c", caller="+4936411234"), "+4936411235", claims.Refusal.CALLER),
        (gera_record("c", caller="+4936411234"), "", claims.Refusal.CALLER),
        (gera_record("c", caller="+4936411234"), "+4936411234", None),
        (gera_record("c", caller="036411234"), "+4936411234", None),  # the same number, written two ways
        (gera_record("c", caller=""), "", None),  # no number at either end (withheld)
    ],
)
def test_a_claim_holds_only_for_a_recorded_call_of_the_partner_from_the_same_number(
    record: CallRecord | None, caller: str, problem: claims.Refusal | None
) -> None:
    assert claims.claim_problem(record, partner="gera", caller=caller) is problem


def test_only_a_leg_of_the_inter_site_trunk_claims_its_call_id() -> None:
    assert claims.is_partner_leg("PJSIP/intersite-00000001")
    assert not claims.is_partner_leg("PJSIP/carrier-00000001")
    assert not claims.is_partner_leg("PJSIP/intersite")  # no channel is named so: the prefix has the dash


def recovered(event: events.DispatcherAnswered) -> events.DispatcherAnswered:
    """The same call as read with Status after a (re)connect: no answer time, no ring time."""
    return dataclasses.replace(event, answered_at=0.0, ring_time=0, recovered=True)


async def test_a_call_held_when_a_restarted_service_connects_gets_its_card_with_the_stores_data() -> None:
    store = FakeStore(records={"gera-7.1": gera_record("gera-7.1")})
    pops, screens, registry = pops_with(store)  # restarted: nothing in the ledger
    await pops.on_event(recovered(answered("jena-7.1")))
    await pops.on_event(recovered(answered("gera-7.1", dispatcher="jena-d2", leg="jena-9.7")))
    # the normal path: the local call's record read from the store, the partner's claim checked,
    # both marked answered (never listed as abandoned)
    assert [(r["call_id"], r["need_record"], r["mark"].dispatcher) for r in store.card_reads] == [
        ("jena-7.1", True, "jena-d1"), ("gera-7.1", False, "jena-d2")
    ]  # fmt: skip
    assert [(d, c["call_id"], c["routing"]["reason"]) for d, c in screens.sent] == [
        ("jena-d1", "jena-7.1", "from the store"), ("jena-d2", "gera-7.1", "recorded at the entry site")
    ]  # fmt: skip
    assert screens.sent[0][1]["answered_at"] == NOW  # the answer itself was missed
    assert pops_counted(registry, "store") == 2


async def test_a_call_read_again_after_an_ami_reconnect_is_not_popped_twice() -> None:
    store = FakeStore(records={"gera-8.1": gera_record("gera-8.1", caller="+4936419999")})
    pops, screens, _ = pops_with(store)
    await pops.on_event(routed("jena-8.1"))
    await pops.on_event(answered("jena-8.1"))
    await pops.on_event(answered("gera-8.1", dispatcher="jena-d2", leg="jena-9.8"))  # refused: the leg's card
    sent, reads = len(screens.sent), len(store.card_reads)
    store.down = True  # nothing may need the store now
    await pops.on_event(recovered(answered("jena-8.1")))
    await pops.on_event(recovered(answered("gera-8.1", dispatcher="jena-d2", leg="jena-9.8")))
    assert (len(screens.sent), len(store.card_reads)) == (sent, reads)
    assert pops.card_of("jena-d1")["call_id"] == "jena-8.1"


class ResubscribingStore(FakeStore):
    """The store's subscription came back twice (a Redis failover); its AML trail has what was written meanwhile."""

    def __init__(self, trail: list[AmlFixRecord]) -> None:
        super().__init__()
        self.trail = trail

    async def aml_trail(self, e164: str) -> list[AmlFixRecord]:
        return list(self.trail)

    async def announcements(self) -> AsyncIterator[Announcement]:
        yield Resubscribed()
        yield Resubscribed()


async def test_after_a_resubscription_a_fix_missed_meanwhile_reaches_the_card_once_and_the_list_is_sent() -> None:
    fix = AmlFixRecord(lat=50.93, lon=11.59, radius_m=12, time=NOW - 5, received=NOW - 4)
    store = ResubscribingStore([fix])
    pops, screens, _ = pops_with(store)
    await pops.on_event(routed("jena-9.1"))
    await pops.on_event(answered("jena-9.1"))
    assert not [loc for loc in pops.card_of("jena-d1")["locations"] if loc["source"] == "aml"]  # type: ignore[index]
    await pops.follow_announcements()  # the announcement published while nobody listened was lost
    locations = [m for d, m in screens.sent if d == "jena-d1" and m["type"] == "location"]
    assert len(locations) == 1  # the second resubscription finds the card up to date
    assert locations[0]["location"]["fix_time"] == NOW - 5
    assert [m["type"] for d, m in screens.sent if d == "*"] == ["abandoned", "abandoned"]
