"""The abandoned-calls feature at its seams: a fake store and a fake AMI outbox reader."""

from __future__ import annotations

import asyncio

import prometheus_client as prom

from telephony import events
from telephony.ami import AmiTimeout
from verbund112.features.abandoned_calls import AbandonedCalls
from verbund112.store import StoreError
from verbund112.store.records import AbandonedCall


class FakeStore:
    def __init__(self) -> None:
        self.listed: dict[str, AbandonedCall] = {}
        self.down = False
        self.refused = asyncio.Event()

    async def add_abandoned_once(self, entry: AbandonedCall) -> str:
        if self.down:
            self.refused.set()
            raise StoreError("timeout")
        if entry.call_id in self.listed:
            return "seen"
        self.listed[entry.call_id] = entry
        return "added"


class FakeAmi:
    def __init__(self, entries: list[events.CallEnded | events.BadDialplanEvent] | None = None) -> None:
        self.entries = entries

    async def abandoned_outbox(self) -> list[events.CallEnded | events.BadDialplanEvent]:
        if self.entries is None:
            raise AmiTimeout("no answer to DBGetTree")
        return self.entries


def ended(call_id: str, *, answered: bool = False, number: str = "015112345678") -> events.CallEnded:
    return events.CallEnded(site="jena", call_id=call_id, uniqueid=call_id, linkedid=call_id, caller_number=number,
                            entry_site="jena", entered_at=100.0, ended_at=130.0, answered=answered)  # fmt: skip


def feature(store: FakeStore) -> tuple[AbandonedCalls, prom.CollectorRegistry]:
    registry = prom.CollectorRegistry()
    dropped = prom.Counter("dropped", "", ["outbox"], registry=registry)
    return AbandonedCalls(store=store, dropped=dropped, registry=registry), registry


async def written(calls: AbandonedCalls) -> None:
    """Run the outbox until everything queued is written."""
    runner = asyncio.create_task(calls.outbox.run())
    try:
        async with asyncio.timeout(5):
            await calls.outbox._queue.join()
    finally:
        runner.cancel()


async def test_an_unanswered_call_is_listed_with_its_number_in_e164_and_its_wait() -> None:
    store = FakeStore()
    calls, _ = feature(store)
    calls.on_event(ended("jena-1.1"))
    calls.on_event(ended("jena-1.2", answered=True))
    await written(calls)
    assert list(store.listed) == ["jena-1.1"]
    entry = store.listed["jena-1.1"]
    assert (entry.caller, entry.site, entry.at, entry.waited_s) == ("+4915112345678", "jena", 130.0, 30.0)


async def test_the_event_and_the_astdb_entry_of_one_call_list_it_once() -> None:
    store = FakeStore()
    calls, registry = feature(store)
    calls.on_event(ended("jena-1.1"))
    await calls.collect_outbox(FakeAmi([ended("jena-1.1"), events.BadDialplanEvent("jena", "outbox entry", "bad")]))
    await written(calls)
    assert list(store.listed) == ["jena-1.1"]
    assert registry.get_sample_value("verbund112_abandoned_calls_total", {"outcome": "seen"}) == 1
    assert registry.get_sample_value("verbund112_dialplan_reports_bad_total", {"name": "outbox entry"}) == 1


async def test_a_store_that_does_not_answer_keeps_the_call_in_the_outbox_until_it_does() -> None:
    store = FakeStore()
    store.down = True
    calls, _ = feature(store)
    calls.outbox._retry_delay = 0.01
    calls.on_event(ended("jena-1.1"))
    runner = asyncio.create_task(calls.outbox.run())
    try:
        async with asyncio.timeout(5):
            await store.refused.wait()
        assert store.listed == {}
        store.down = False
        async with asyncio.timeout(5):
            await calls.outbox._queue.join()
    finally:
        runner.cancel()
    assert list(store.listed) == ["jena-1.1"]


async def test_an_outbox_that_cannot_be_read_is_counted_and_read_at_the_next_connect() -> None:
    calls, registry = feature(FakeStore())
    await calls.collect_outbox(FakeAmi(None))
    assert registry.get_sample_value("verbund112_abandoned_outbox_reads_total", {"outcome": "failed"}) == 1
