"""112 calls through the real lab: sipp as the carrier, Asterisk 22, pyVoIP desks."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from lab import lab
from routing.decision import Route
from telephony.events import CallerJoinedQueue, DispatcherAnswered
from tests.conftest import next_event, place_call
from verbund112.features.hub import CallRouted

pytestmark = pytest.mark.lab

JENA_CALLER = "+4936411234567"


async def test_call_from_jena_number_is_answered_by_a_jena_dispatcher_named_in_ami_events(
    verbund: lab.Verbund, start_service, start_desks
) -> None:
    service = await start_service("jena")
    desks = await start_desks("jena", ["jena-d1"])
    with service.hub.subscribe() as events:
        assert await place_call(verbund, "jena", JENA_CALLER, talk_ms=500) == 0

        routed = await next_event(events, CallRouted)
        joined = await next_event(events, CallerJoinedQueue, lambda e: e.call_id == routed.call_id)
        answered = await next_event(events, DispatcherAnswered, lambda e: e.call_id == routed.call_id)

    assert routed.decision.route is Route.LOCAL
    assert routed.caller_number == JENA_CALLER
    assert joined.queue == "112-jena"
    assert answered.site == "jena"
    assert answered.dispatcher == "jena-d1"
    assert answered.caller_number == JENA_CALLER
    desk_event = await asyncio.to_thread(desks.wait_for, lambda e: e.get("event") == "answered", 5)
    assert desk_event["seat"] == "jena-d1"
    assert desk_event["caller"] == JENA_CALLER


async def test_call_is_answered_with_the_service_stopped(verbund: lab.Verbund, start_desks) -> None:
    # No service: the FastAGI port refuses, AGISTATUS=FAILURE, the dialplan queues locally.
    desks = await start_desks("jena", ["jena-d2"])
    assert await place_call(verbund, "jena", JENA_CALLER, talk_ms=300) == 0
    answered = await asyncio.to_thread(desks.wait_for, lambda e: e.get("event") == "answered", 5)
    assert answered["seat"] == "jena-d2"


async def test_call_is_answered_when_the_fastagi_server_accepts_and_then_hangs(
    verbund: lab.Verbund, start_desks
) -> None:
    """Asterisk would wait forever on such a server; TIMEOUT(absolute) + the T extension free the call."""
    accepted = asyncio.Event()
    held: list[asyncio.StreamWriter] = []

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        accepted.set()
        await asyncio.Event().wait()

    server = await asyncio.start_server(hang, "127.0.0.1", verbund.ports["jena"].fastagi, reuse_address=True)
    try:
        desks = await start_desks("jena", ["jena-d1"])
        assert await place_call(verbund, "jena", JENA_CALLER, talk_ms=300) == 0
        assert accepted.is_set(), "the call never reached the hung FastAGI server"
        answered = await asyncio.to_thread(desks.wait_for, lambda e: e.get("event") == "answered", 5)
        assert answered["seat"] == "jena-d1"
    finally:
        server.close()
        for writer in held:
            writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 2)


async def test_call_goes_to_gera_over_the_intersite_trunk_when_no_jena_dispatcher_is_logged_in(
    verbund: lab.Verbund, start_service, start_desks
) -> None:
    jena = await start_service("jena")
    gera = await start_service("gera")
    desks = await start_desks("gera", ["gera-d1"])
    with jena.hub.subscribe() as jena_events, gera.hub.subscribe() as gera_events:
        assert await place_call(verbund, "jena", JENA_CALLER, talk_ms=300) == 0
        routed = await next_event(jena_events, CallRouted)
        answered = await next_event(gera_events, DispatcherAnswered)

    assert answered.site == "gera"
    assert answered.dispatcher == "gera-d1"
    # the Verbund call id and the caller number crossed the trunk with the call
    assert answered.call_id == routed.call_id
    assert answered.from_site == "jena"
    assert answered.caller_number == JENA_CALLER
    desk_event = await asyncio.to_thread(desks.wait_for, lambda e: e.get("event") == "answered", 5)
    assert desk_event["caller"] == JENA_CALLER


async def test_the_service_sees_the_pidf_lo_position_of_the_call(
    verbund: lab.Verbund, start_service, start_desks
) -> None:
    service = await start_service("jena")
    await start_desks("jena", ["jena-d1"])
    with service.hub.subscribe() as events:
        code = await place_call(verbund, "jena", "+4915112345678", talk_ms=300, position=(50.927201, 11.586403, 15))
        assert code == 0
        routed = await next_event(events, CallRouted)

    assert routed.position is not None
    assert routed.position.shape == "Circle"
    assert routed.position.lat == pytest.approx(50.927201)
    assert routed.position.lon == pytest.approx(11.586403)
    assert routed.position.radius_m == 15
    assert routed.position.method == "GPS"
    assert routed.location_problem == ""


async def test_service_reconnects_by_itself_after_asterisk_restarts(
    verbund: lab.Verbund, start_service, start_desks
) -> None:
    service = await start_service("jena")
    site = verbund.site("jena")
    await asyncio.to_thread(site.stop)
    async with asyncio.timeout(10):
        await service.ami.disconnected.wait()
    await asyncio.to_thread(site.start)
    async with asyncio.timeout(15):
        await service.ami.connected.wait()
    assert service.ami.connections == 2

    await start_desks("jena", ["jena-d1"])
    with service.hub.subscribe() as events:
        assert await place_call(verbund, "jena", JENA_CALLER, talk_ms=300) == 0
        routed = await next_event(events, CallRouted)
        answered = await next_event(events, DispatcherAnswered, lambda e: e.call_id == routed.call_id)
    assert answered.dispatcher == "jena-d1"


async def test_calls_are_routed_while_redis_is_down(verbund: lab.Verbund, start_service, start_desks) -> None:
    from lab.processes import free_tcp_port

    service = await start_service("jena", redis={"url": f"redis://127.0.0.1:{free_tcp_port()}/0", "sentinels": []})
    await start_desks("jena", ["jena-d1"])
    with service.hub.subscribe() as events:
        assert await place_call(verbund, "jena", JENA_CALLER, talk_ms=300) == 0
        routed = await next_event(events, CallRouted)
        await next_event(events, DispatcherAnswered, lambda e: e.call_id == routed.call_id)
    assert service.store.reachable is False
    assert service.fastagi.stats.answered >= 1
