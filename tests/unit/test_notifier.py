"""The dispatchers' screens: a slow or hung browser costs only itself (real aiohttp server and clients)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import prometheus_client as prom
import pytest
from aiohttp import web

from tests.support.waiting import eventually
from web.notifier import DispatcherScreens

TIMEOUT = aiohttp.ClientTimeout(total=10)


class Cards:
    """The screen pops as the notifier sees them (web.ports.CallCards)."""

    def __init__(self) -> None:
        self.cards: dict[str, dict[str, Any]] = {}

    def card_of(self, dispatcher: str) -> dict[str, Any] | None:
        return self.cards.get(dispatcher)

    async def abandoned_message(self) -> dict[str, Any]:
        return {"type": "abandoned", "calls": []}

    async def callback_done(self, call_id: str) -> bool:
        return False


@pytest.fixture
async def served() -> AsyncIterator[tuple[DispatcherScreens, Cards, str]]:
    screens = DispatcherScreens("jena", prom.CollectorRegistry(), queue_size=8)
    cards = Cards()

    async def socket(request: web.Request) -> web.StreamResponse:
        return await screens.serve(request, request.match_info["name"], cards)

    app = web.Application()
    app.router.add_get("/ws/{name}", socket)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield screens, cards, f"ws://127.0.0.1:{runner.addresses[0][1]}/ws/"
    finally:
        await screens.close_all()
        await runner.cleanup()


async def receive(socket: aiohttp.ClientWebSocketResponse, kind: str) -> dict[str, Any]:
    async with asyncio.timeout(5):
        while True:
            message = await socket.receive_json()
            if message["type"] == kind:
                return message


async def test_a_screen_gets_hello_its_card_and_the_callback_list(served: Any) -> None:
    _, cards, url = served
    cards.cards["jena-d1"] = {"type": "card", "call_id": "jena-1.1"}
    async with aiohttp.ClientSession(timeout=TIMEOUT) as client, client.ws_connect(url + "jena-d1") as socket:
        assert (await socket.receive_json())["type"] == "hello"
        assert (await socket.receive_json())["call_id"] == "jena-1.1"
        assert (await socket.receive_json())["type"] == "abandoned"
        await socket.send_str("garbage")
        assert "error" in await receive(socket, "error")
        await socket.send_json({"type": "state"})
        assert (await receive(socket, "state"))["card"]["call_id"] == "jena-1.1"


async def test_a_hung_screen_is_closed_and_never_delays_another(served: Any) -> None:
    screens, _, url = served
    big = {"type": "location", "padding": "x" * 256 * 1024}  # fills the hung screen's socket buffers fast
    async with (
        aiohttp.ClientSession(timeout=TIMEOUT) as client,
        client.ws_connect(url + "jena-slow", max_msg_size=0) as slow,
        client.ws_connect(url + "jena-fast") as fast,
    ):
        await receive(slow, "abandoned")  # connected and served; from now on the slow screen reads nothing
        await receive(fast, "abandoned")
        slow_screen = next(iter(screens._screens["jena-slow"]))
        # the hung screen's writer blocks, its queue fills: then a pop for another dispatcher goes out at once
        for _ in range(1000):
            if slow_screen.queue.full():
                break
            screens.send("jena-slow", big)
            await asyncio.sleep(0)
        assert slow_screen.queue.full()
        assert screens.send("jena-fast", {"type": "card", "call_id": "jena-2.1"}) == 1
        assert (await receive(fast, "card"))["call_id"] == "jena-2.1"
        assert slow_screen.queue.full()  # still stuck while the other screen got its card
        # one more for the hung screen: it is closed with a reason, counted, and nothing is queued for it
        assert screens.send("jena-slow", big) == 0
        assert screens.overflowed._value.get() == 1
        async with asyncio.timeout(10):
            while not slow.closed:
                message = await slow.receive()
                if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                    break
        # the fast screen is untouched and still served
        assert screens.send("jena-fast", {"type": "call-ended", "call_id": "jena-2.1"}) == 1
        assert (await receive(fast, "call-ended"))["call_id"] == "jena-2.1"


async def test_a_reconnecting_screen_gets_its_card_again(served: Any) -> None:
    screens, cards, url = served
    cards.cards["jena-d1"] = {"type": "card", "call_id": "jena-3.1"}
    async with aiohttp.ClientSession(timeout=TIMEOUT) as client:
        async with client.ws_connect(url + "jena-d1") as first:
            await receive(first, "abandoned")
        async with client.ws_connect(url + "jena-d1") as second:
            assert (await receive(second, "card"))["call_id"] == "jena-3.1"
        # the server lets go of a screen after its close handshake: soon, not at once
        await eventually(lambda: not screens._screens.get("jena-d1"), "both screens let go")
