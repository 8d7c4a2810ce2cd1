"""The overflow between Jena and Gera in the real lab: who moves, who answers, what follows the call."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest

from lab import lab
from overflow.state import DeskState
from routing.decision import Route
from telephony import events
from telephony.ami import AmiError
from tests.conftest import next_event, place_call
from tests.integration.test_screen_pops import TIMEOUT, connect_screen, next_message
from verbund112.features.hub import CallRouted
from verbund112.service import Service

pytestmark = pytest.mark.lab


async def moves_of(service: Service) -> list[dict[str, Any]]:
    return [move.as_dict() for move in await service.store.recent_moves(0)]


async def wait_for_move(service: Service, call_id: str, within: float = 20) -> dict[str, Any]:
    """The recorded outcome of a call's move (recorded when the partner confirms or the move fails)."""
    async with asyncio.timeout(within):
        while True:
            for move in await moves_of(service):
                if move["call_id"] == call_id:
                    return move
            await asyncio.sleep(0.1)  # polls Redis, which has no event for this


async def test_a_caller_waiting_at_busy_jena_is_moved_to_a_free_gera_dispatcher_with_jenas_data(
    verbund: lab.Verbund, start_service, start_desks
) -> None:
    jena = await start_service("jena")
    gera = await start_service("gera")
    await start_desks("jena", ["jena-d1"])
    await start_desks("gera", ["gera-d1"])
    async with aiohttp.ClientSession(timeout=TIMEOUT) as client:
        gera_screen = await connect_screen(client, verbund, "gera", "gera-d1")
        await next_message(gera_screen, "hello")
        with jena.hub.subscribe() as seen:
            first = asyncio.create_task(place_call(verbund, "jena", "+4936411110001", talk_ms=15000))
            await next_event(seen, events.DispatcherAnswered, lambda e: e.dispatcher == "jena-d1")
            second = asyncio.create_task(
                place_call(verbund, "jena", "+4915112341002", talk_ms=2000, position=(50.9279, 11.5891, 30))
            )
            waiting = await next_event(seen, events.CallerJoinedQueue, lambda e: e.caller_number == "+4915112341002")
        card = await next_message(gera_screen, "card", within=15)
        move = await wait_for_move(jena, waiting.call_id)
        assert move["outcome"] == "moved", move
        assert move["from"] == "jena" and move["to"] == "gera"
        assert "every local dispatcher busy" in move["reason"]
        # the screen pop at Gera carries what Jena knew
        assert card["call_id"] == waiting.call_id
        assert card["overflowed_from"] == "jena"
        assert card["entry_site"] == "jena"
        assert card["locations"][0]["source"] == "pidf"
        assert card["locations"][0]["district"] == "Jena"
        assert card["routing"]["centre"] == "jena"
        assert await second == 0
        assert await first == 0
    assert jena.overflow.moves.labels("moved")._value.get() == 1
    assert gera.overflow.moves.labels("moved")._value.get() == 0


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def burst(
    verbund: lab.Verbund, site: str, prefix: str, count: int, every_s: float, talk_ms: int
) -> dict[str, tuple[float, int]]:
    """`count` calls into one site, one every `every_s`; caller -> (launched at, sipp exit code)."""
    launched: dict[str, float] = {}
    calls: dict[str, asyncio.Task[int]] = {}
    for i in range(count):
        caller = f"{prefix}{i:02d}"
        launched[caller] = time.time()
        calls[caller] = asyncio.create_task(place_call(verbund, site, caller, talk_ms=talk_ms))
        await asyncio.sleep(every_s)  # the burst's pacing, not a wait for an outcome
    return {caller: (launched[caller], await task) for caller, task in calls.items()}


def answers(*desks: lab.Desks) -> dict[str, dict[str, Any]]:
    """caller -> the desk event of their answer (seat, time)."""
    found: dict[str, dict[str, Any]] = {}
    for group in desks:
        for event in group.drain():
            if event.get("event") == "answered":
                found.setdefault(event["caller"], event)
    return found


def report(capsys: pytest.CaptureFixture[str], title: str, results: dict[str, tuple[float, int]],
           answered: dict[str, dict[str, Any]]) -> None:  # fmt: skip
    waits = [answered[c]["at"] - launched for c, (launched, _) in results.items() if c in answered]
    by_site: dict[str, int] = {}
    for event in answered.values():
        by_site[event["seat"].split("-")[0]] = by_site.get(event["seat"].split("-")[0], 0) + 1
    p50, p95 = percentile(waits, 0.5), percentile(waits, 0.95)
    with capsys.disabled():
        print(f"\n{title}: {len(waits)}/{len(results)} answered {by_site}; "
              f"answer time p50 {p50:.1f} s, p95 {p95:.1f} s, max {max(waits):.1f} s")  # fmt: skip


async def burst_lab(start_service: Any, start_desks: Any) -> tuple[Service, Service, lab.Desks, lab.Desks]:
    """Both services; the issue's burst desks: 2 at Jena, 3 at Gera."""
    jena = await start_service("jena")
    gera = await start_service("gera")
    jena_desks = await start_desks("jena", ["jena-d1", "jena-d2"])
    gera_desks = await start_desks("gera", ["gera-d1", "gera-d2", "gera-d3"])
    return jena, gera, jena_desks, gera_desks


async def test_burst_into_jena_every_call_answered_some_in_gera_none_moved_twice(
    verbund: lab.Verbund, start_service, start_desks, capsys
) -> None:
    jena, gera, jena_desks, gera_desks = await burst_lab(start_service, start_desks)
    before = {m["call_id"] for m in await moves_of(jena)}
    results = await burst(verbund, "jena", "+493641555", count=20, every_s=0.5, talk_ms=1500)

    assert {caller: code for caller, (_, code) in results.items() if code != 0} == {}
    answered = answers(jena_desks, gera_desks)
    assert set(answered) == set(results)
    report(capsys, "burst of 20 calls into Jena in 10 s, 2 Jena + 3 Gera desks", results, answered)
    in_gera = [c for c, event in answered.items() if event["seat"].startswith("gera-")]
    assert in_gera, "no call was answered in Gera"
    moves = [m for m in await moves_of(jena) if m["call_id"] not in before]
    with capsys.disabled():
        print("moves by outcome:", {o: sum(m["outcome"] == o for m in moves) for o in {m["outcome"] for m in moves}})
    moved_ids = [m["call_id"] for m in moves]
    assert len(moved_ids) == len(set(moved_ids)), "a call was moved twice"
    assert all(m["from"] == "jena" for m in moves)
    assert any(m["outcome"] == "moved" for m in moves)
    assert gera.overflow.moves.labels("moved")._value.get() == 0  # nothing went back
    assert jena.overflow.in_flight() == []


async def test_burst_with_the_services_stopped_midway_every_call_is_still_answered(
    verbund: lab.Verbund, start_service, start_desks, capsys
) -> None:
    jena, gera, jena_desks, gera_desks = await burst_lab(start_service, start_desks)
    running = asyncio.create_task(burst(verbund, "jena", "+493641666", count=20, every_s=0.5, talk_ms=1500))
    await asyncio.to_thread(jena_desks.wait_for, lambda e: e.get("event") == "answered", 20)
    jena.stop()  # both services gone: Asterisk's own dialplan carries on
    gera.stop()
    results = await running
    assert jena.ami.disconnected.is_set() and gera.ami.disconnected.is_set()
    assert {caller: code for caller, (_, code) in results.items() if code != 0} == {}
    answered = answers(jena_desks, gera_desks)
    assert set(answered) == set(results)
    report(capsys, "same burst, both services stopped after the first answer", results, answered)


async def test_gera_down_nothing_moves_there_and_jena_answers_and_pops_gera_area_calls(
    verbund: lab.Verbund, start_service, start_desks, capsys
) -> None:
    jena = await start_service("jena")
    gera = await start_service("gera")
    jena_desks = await start_desks("jena", ["jena-d1", "jena-d2"])
    await asyncio.wait_for(jena.partner.reporting.wait(), 10)
    gera_asterisk = verbund.site("gera")
    before = {m["call_id"] for m in await moves_of(jena)}
    stopped_at = time.time()
    gera_asterisk.stop()
    try:
        await asyncio.wait_for(jena.partner.gone.wait(), 10)
        with capsys.disabled():
            print(f"\nGera's Asterisk stopped: Jena saw its partner gone after {time.time() - stopped_at:.2f} s")
        assert jena.overflow.partner is None or not jena.overflow.partner.ami_connected

        # the carrier's substitute routing sends a Gera caller to Jena: routed and popped as normal
        async with aiohttp.ClientSession(timeout=TIMEOUT) as client:
            screens = [await connect_screen(client, verbund, "jena", seat) for seat in jena_desks.seats]
            for screen in screens:
                await next_message(screen, "hello")
            with jena.hub.subscribe() as seen:
                call = asyncio.create_task(place_call(verbund, "jena", "+49365777001", talk_ms=1500))
                routed = await next_event(seen, CallRouted, lambda e: e.caller_number == "+49365777001")
                answered = await next_event(seen, events.DispatcherAnswered, lambda e: e.call_id == routed.call_id)
            assert routed.decision.route is Route.LOCAL
            assert "partner-unavailable" in routed.decision.flags
            assert "ZLS gera, but it is not reporting: answered here" in routed.decision.reason
            card = await next_message(screens[jena_desks.seats.index(answered.dispatcher)], "card")
            assert card["call_id"] == routed.call_id
            assert "partner-unavailable" in card["routing"]["flags"]
            assert await call == 0

        results = await burst(verbund, "jena", "+493641777", count=8, every_s=0.5, talk_ms=1500)
        assert {caller: code for caller, (_, code) in results.items() if code != 0} == {}
        answered = answers(jena_desks)
        assert set(results) <= set(answered)
        assert [m for m in await moves_of(jena) if m["call_id"] not in before] == []
    finally:
        gera_asterisk.start()
        await asyncio.wait_for(gera.ami.connected.wait(), 15)


async def test_asterisk_refuses_to_withdraw_a_caller_a_dispatcher_has_answered(
    verbund: lab.Verbund, start_service, start_desks
) -> None:
    """The safety of the move itself: it cannot tear an answered 112 call away from a dispatcher."""
    jena = await start_service("jena")
    await start_desks("jena", ["jena-d1"])
    with jena.hub.subscribe() as seen:
        call = asyncio.create_task(place_call(verbund, "jena", "+4936411119001", talk_ms=4000))
        joined = await next_event(seen, events.CallerJoinedQueue, lambda e: e.caller_number == "+4936411119001")
        await next_event(seen, events.DispatcherAnswered, lambda e: e.call_id == joined.call_id)
    with pytest.raises(AmiError, match="No such caller"):
        await jena.ami.withdraw_caller("112-jena", joined.channel, "001001")
    assert await call == 0  # the call went on to its normal end


async def test_an_admin_switching_the_direction_off_stops_the_moves(
    verbund: lab.Verbund, start_service, start_desks
) -> None:
    jena = await start_service("jena")
    await start_service("gera")
    await start_desks("jena", ["jena-d1"])
    await start_desks("gera", ["gera-d1"])
    text = verbund.rules_file.read_text().replace("jena: {enabled: true,", "jena: {enabled: false,")
    change = await jena.rules.change("test-admin", text)
    assert change.applied
    with jena.hub.subscribe() as seen:
        first = asyncio.create_task(place_call(verbund, "jena", "+4936411119101", talk_ms=6000))
        await next_event(seen, events.DispatcherAnswered)
        second = asyncio.create_task(place_call(verbund, "jena", "+4936411119102", talk_ms=1000))
        joined = await next_event(seen, events.CallerJoinedQueue, lambda e: e.caller_number == "+4936411119102")
        answered = await next_event(seen, events.DispatcherAnswered, lambda e: e.call_id == joined.call_id)
    assert answered.dispatcher == "jena-d1"  # waited for Jena's desk: nobody moved it
    assert jena.overflow.last_plan.why_not == "overflow to the partner is switched off"
    assert [m for m in await moves_of(jena) if m["call_id"] == joined.call_id] == []
    assert await first == 0 and await second == 0


async def test_a_moved_caller_enters_the_partners_queue_ahead_of_callers_who_came_later(
    verbund: lab.Verbund, start_service, start_desks
) -> None:
    """Seniority across the move, driven by hand: the services' own moves are switched off here."""
    text = verbund.rules_file.read_text().replace("{enabled: true,", "{enabled: false,")
    jena = await start_service("jena")
    gera = await start_service("gera")
    for service in (jena, gera):
        assert (await service.rules.change("test-admin", text)).applied
    await start_desks("jena", ["jena-d1"])
    await start_desks("gera", ["gera-d1"])
    with jena.hub.subscribe() as at_jena, gera.hub.subscribe() as at_gera:
        busy_gera = asyncio.create_task(place_call(verbund, "gera", "+49365111201", talk_ms=8000))
        await next_event(at_gera, events.DispatcherAnswered)
        busy_jena = asyncio.create_task(place_call(verbund, "jena", "+4936411112202", talk_ms=15000))
        await next_event(at_jena, events.DispatcherAnswered)
        senior = asyncio.create_task(place_call(verbund, "jena", "+4936411112203", talk_ms=1000))
        j = await next_event(at_jena, events.CallerJoinedQueue, lambda e: e.caller_number == "+4936411112203")
        later = asyncio.create_task(place_call(verbund, "gera", "+49365111204", talk_ms=1000))
        g = await next_event(at_gera, events.CallerJoinedQueue, lambda e: e.caller_number == "+49365111204")

        await jena.ami.withdraw_caller("112-jena", j.channel, "001001")  # what the mover sends
        arrived = await next_event(at_gera, events.CallerJoinedQueue, lambda e: e.call_id == j.call_id)
        assert (arrived.from_site, arrived.position) == ("jena", 1)
        first = await next_event(at_gera, events.DispatcherAnswered, lambda e: e.call_id in (j.call_id, g.call_id))
        assert first.call_id == j.call_id, "the caller who waited longer is answered first"
        assert first.from_site == "jena"
    for call in (busy_gera, busy_jena, senior, later):
        assert await call == 0


async def test_after_a_service_restart_callers_already_waiting_keep_their_call_id_and_moved_mark(
    verbund: lab.Verbund, start_service, start_desks
) -> None:
    """QueueStatus lists callers without channel variables; the service reads them, so a caller moved
    once (and back) is not moved a second time by a service that (re)connects meanwhile."""
    text = verbund.rules_file.read_text().replace("jena: {enabled: true,", "jena: {enabled: false,")
    first_service = await start_service("jena")
    assert (await first_service.rules.change("test-admin", text)).applied
    await start_desks("jena", ["jena-d1"])
    with first_service.hub.subscribe() as seen:
        busy = asyncio.create_task(place_call(verbund, "jena", "+4936411113301", talk_ms=8000))
        await next_event(seen, events.DispatcherAnswered)
        waiting = asyncio.create_task(place_call(verbund, "jena", "+4936411113302", talk_ms=1000))
        joined = await next_event(seen, events.CallerJoinedQueue, lambda e: e.caller_number == "+4936411113302")
    # the service's AMI user may not set variables: mark the caller as moved from Asterisk's CLI
    await asyncio.to_thread(verbund.site("jena").cli, f"dialplan set chanvar {joined.channel} V112_MOVED 1")
    first_service.stop()
    await asyncio.wait_for(first_service.stopped.wait(), 15)  # its ports are free again

    again = await start_service("jena")
    await asyncio.wait_for(again.overflow.queue_read.wait(), 10)
    (listed,) = [w for w in again.overflow.snapshot().waiting if w.uniqueid == joined.uniqueid]
    assert listed.call_id == joined.call_id
    assert listed.moved and not listed.movable
    # the desks come from the same QueueStatus answer (no member event since the connect)
    assert dict(again.overflow.snapshot().desks)["jena-d1"] is DeskState.TALKING
    assert await busy == 0 and await waiting == 0
