"""The overflow between Jena and Gera in the real lab: who moves, who answers, what follows the call."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from telephony import events
from tests.conftest import next_event, place_call
from tests.integration.test_screen_pops import TIMEOUT, next_message, socket_url
from verbund112 import stores
from verbund112.lab import lab
from verbund112.service import Service

pytestmark = pytest.mark.lab


async def moves_of(service: Service) -> list[dict[str, Any]]:
    return await stores.recent_moves(service.redis, 0, 2.0)


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
        gera_screen = await client.ws_connect(socket_url(verbund, "gera", "gera-d1"))
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
