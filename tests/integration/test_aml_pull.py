"""AML pull through the real lab: a live call without AML is polled at a stand-in central
server (HTTPS with a client certificate and basic auth), the fix reaches the dispatcher holding
the call, and polling ends with the call."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from lab import lab
from routing.numbers import to_e164
from telephony.events import ChannelHungUp
from tests.conftest import next_event, place_call
from tests.integration.test_screen_pops import TIMEOUT, connect_screen, next_message
from tests.support.aml_server import NO_DATA, PASSWORD, USERNAME, Pki, fix, make_pki, serve
from verbund112.features.hub import CallRouted

pytestmark = pytest.mark.lab


def pull_settings(pki: Pki, url: str) -> dict[str, Any]:
    return {
        "enabled": True, "url": url, "client_cert": str(pki.client_cert), "client_key": str(pki.client_key),
        "ca_file": str(pki.ca), "username": USERNAME, "password": PASSWORD, "request_timeout": 2.0,
        "backoff_first": 0.2, "backoff_factor": 1.5, "backoff_max": 0.5,
    }  # fmt: skip


def routed_for(number: str) -> Any:
    return lambda event: to_e164(event.caller_number) == number


async def test_a_call_without_aml_gets_the_servers_fix_on_the_dispatchers_screen(
    verbund: lab.Verbund, start_service, start_desks, tmp_path: Path
) -> None:
    number = "+4915112349010"
    pki = make_pki(tmp_path)
    has_fix = asyncio.Event()  # the handset's AML reaches the central server only when the test says so

    def answer(asked: str) -> object:
        if asked == number and has_fix.is_set():
            return [fix(50.9301, 11.5902, 9, time_ms=int(time.time() * 1000))]
        return NO_DATA

    async with serve(pki, answer) as server:
        service = await start_service("jena", aml_pull=pull_settings(pki, server.url))
        await service.aml_pull.settled.wait()
        assert service.aml_pull.polls.running
        await start_desks("jena", ["jena-d1"])
        async with aiohttp.ClientSession(timeout=TIMEOUT) as client:
            screen = await connect_screen(client, verbund, "jena", "jena-d1")
            await next_message(screen, "hello")
            with service.hub.subscribe() as events:
                call = asyncio.create_task(place_call(verbund, "jena", number, talk_ms=8000))
                routed = await next_event(events, CallRouted, routed_for(number))
                card = await next_message(screen, "card")
                assert [loc["source"] for loc in card["locations"] if loc["source"] == "aml"] == []
                await server.asked(number)  # polled while there was nothing: "no aml data"

                has_fix.set()
                update = await next_message(screen, "location", within=10)
                assert update["call_id"] == card["call_id"]
                assert update["location"]["source"] == "aml"
                assert update["location"]["lat"] == pytest.approx(50.9301)
                assert update["location"]["radius_m"] == 9
                assert (update["location"]["district"], update["location"]["centre"]) == ("Jena", "jena")
                assert await service.aml_pull.polls.finished(routed.uniqueid) == "fix"
                trail = [fix.as_dict() for fix in await service.store.aml_trail(number)]
                assert trail[0]["format"] == "pull"
                assert await call == 0


async def test_polling_ends_when_the_caller_hangs_up(verbund: lab.Verbund, start_service, tmp_path: Path) -> None:
    number = "+4915112349011"
    pki = make_pki(tmp_path)
    async with serve(pki) as server:  # never a fix
        service = await start_service("jena", aml_pull=pull_settings(pki, server.url))
        await service.aml_pull.settled.wait()
        assert service.aml_pull.polls.running
        with service.hub.subscribe() as events:
            call = asyncio.create_task(place_call(verbund, "jena", number, hang_up_after_ms=3000))
            routed = await next_event(events, CallRouted, routed_for(number))
            async with asyncio.timeout(20):
                await server.asked(number, times=2)
            await next_event(events, ChannelHungUp, lambda event: event.uniqueid == routed.uniqueid)
            assert await service.aml_pull.polls.finished(routed.uniqueid) == "call-ended"
            assert service.aml_pull.polls.polls == {}
            asked = server.requests.count(number)
            assert await call == 0
            # the poll task is gone: nothing can ask any more; the count is the same after the call's end
            assert server.requests.count(number) == asked
            assert server.refused == 0
