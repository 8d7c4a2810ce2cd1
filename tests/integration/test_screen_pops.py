"""Screen pops through the real lab: the answering dispatcher's WebSocket, and only theirs."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest

from lab import lab
from tests.conftest import place_call

pytestmark = pytest.mark.lab
TIMEOUT = aiohttp.ClientTimeout(total=30)


async def next_message(socket: aiohttp.ClientWebSocketResponse, kind: str, within: float = 20) -> dict[str, Any]:
    async with asyncio.timeout(within):
        while True:
            message = await socket.receive_json()
            if message["type"] == kind:
                return message


async def nothing_but(socket: aiohttp.ClientWebSocketResponse, allowed: set[str]) -> None:
    """Ask for the state: everything the server sent before its answer must be of the allowed kinds."""
    await socket.send_json({"type": "state"})
    async with asyncio.timeout(10):
        while True:
            message = await socket.receive_json()
            if message["type"] == "state":
                assert message["card"] is None
                return
            assert message["type"] in allowed, message


def socket_url(verbund: lab.Verbund, site: str, seat: str) -> str:
    return f"http://127.0.0.1:{verbund.ports[site].web}/ws/v1/dispatchers/{seat}"


async def connect_screen(
    client: aiohttp.ClientSession, verbund: lab.Verbund, site: str, seat: str, token: str | None = None
) -> aiohttp.ClientWebSocketResponse:
    """A dispatcher's screen, signed in with the token in the Authorization header (default: the seat's own)."""
    headers = {"Authorization": f"Bearer {token or verbund.desk_tokens[seat]}"}
    return await client.ws_connect(socket_url(verbund, site, seat), headers=headers)


async def post_aml(verbund: lab.Verbund, site: str, number: str, lat: float, lon: float) -> None:
    now_ms = str(int(time.time() * 1000))
    form = {"location_latitude": str(lat), "location_longitude": str(lon), "location_accuracy": "12",
            "location_source": "gps", "time": now_ms, "location_time": now_ms, "device_number": number}  # fmt: skip
    url = f"http://127.0.0.1:{verbund.ports[site].web}/aml/v1/https"
    headers = {"Authorization": f"Bearer {verbund.aml_token}"}
    async with aiohttp.ClientSession(timeout=TIMEOUT) as client, client.post(url, data=form, headers=headers) as r:
        assert r.status == 202


async def test_the_answering_dispatcher_gets_the_card_and_aml_updates_the_others_nothing(
    verbund: lab.Verbund, start_service, start_desks
) -> None:
    await start_service("jena")
    await start_desks("jena", ["jena-d1"])
    async with aiohttp.ClientSession(timeout=TIMEOUT) as client:
        mine = await connect_screen(client, verbund, "jena", "jena-d1")
        other = await connect_screen(client, verbund, "jena", "jena-d2")
        await next_message(mine, "hello")
        await next_message(other, "hello")
        call = asyncio.create_task(
            place_call(verbund, "jena", "+4915112349001", talk_ms=6000, position=(50.9279, 11.5891, 25))
        )
        card = await next_message(mine, "card")
        assert card["dispatcher"] == "jena-d1"
        assert card["caller"] == "+4915112349001"
        assert card["answered_site"] == "jena"
        assert card["locations"][0]["source"] == "pidf"
        assert card["locations"][0]["district"] == "Jena"
        assert card["locations"][0]["centre"] == "jena"
        assert card["locations"][0]["radius_m"] == 25

        await post_aml(verbund, "jena", "+4915112349001", 50.9301, 11.5902)
        update = await next_message(mine, "location", within=5)
        assert update["call_id"] == card["call_id"]
        assert update["location"]["source"] == "aml"
        assert update["location"]["lat"] == pytest.approx(50.9301)
        assert (update["location"]["district"], update["location"]["ags"]) == ("Jena", "16053")
        assert (update["location"]["centre"], update["location"]["centre_name"]) == ("jena", "ZLS Jena")

        # reconnect mid-call: the card comes again
        await mine.close()
        again = await connect_screen(client, verbund, "jena", "jena-d1")
        resent = await next_message(again, "card")
        assert resent["call_id"] == card["call_id"]
        assert resent["locations"][0]["source"] == "aml"

        await nothing_but(other, {"hello", "abandoned"})
        assert await call == 0
        ended = await next_message(again, "call-ended")
        assert ended["call_id"] == card["call_id"]


async def test_a_call_moved_to_gera_pops_at_gera_with_jenas_data_and_later_aml(
    verbund: lab.Verbund, start_service, start_desks
) -> None:
    await start_service("jena")
    await start_service("gera")
    await start_desks("gera", ["gera-d1"])  # nobody at Jena: the call goes over the trunk
    async with aiohttp.ClientSession(timeout=TIMEOUT) as client:
        gera = await connect_screen(client, verbund, "gera", "gera-d1")
        await next_message(gera, "hello")
        call = asyncio.create_task(
            place_call(verbund, "jena", "+4915112349002", talk_ms=6000, position=(50.9279, 11.5891, 40))
        )
        card = await next_message(gera, "card")
        assert card["answered_site"] == "gera"
        assert card["entry_site"] == "jena"
        assert card["overflowed_from"] == "jena"
        assert card["call_id"].startswith("jena-")
        assert card["locations"][0]["district"] == "Jena"  # what Jena's routing knew
        await post_aml(verbund, "jena", "+4915112349002", 50.931, 11.59)  # AML arrives at Jena's intake
        update = await next_message(gera, "location", within=5)
        assert update["location"]["lat"] == pytest.approx(50.931)
        assert update["location"]["centre"] == "jena"  # answered at Gera, but Jena's district
        assert await call == 0


async def test_an_abandoned_call_lands_on_every_dispatchers_callback_list(verbund: lab.Verbund, start_service) -> None:
    await start_service("jena")
    await start_service("gera")
    async with aiohttp.ClientSession(timeout=TIMEOUT) as client:
        jena_desk = await connect_screen(client, verbund, "jena", "jena-d3")
        gera_desk = await connect_screen(client, verbund, "gera", "gera-d3")
        await next_message(jena_desk, "hello")
        await next_message(gera_desk, "hello")
        assert await place_call(verbund, "jena", "+4915112349003", hang_up_after_ms=1500) == 0

        async def listed(socket: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
            while True:
                message = await next_message(socket, "abandoned")
                if any(c["caller"] == "+4915112349003" for c in message["calls"]):
                    return next(c for c in message["calls"] if c["caller"] == "+4915112349003")

        entry = await listed(jena_desk)
        assert (await listed(gera_desk))["call_id"] == entry["call_id"]

        url = f"http://127.0.0.1:{verbund.ports['gera'].web}/api/v1/abandoned/{entry['call_id']}/callback-done"
        headers = {"Authorization": f"Bearer {verbund.desk_tokens['gera-d3']}"}
        async with client.post(url, headers=headers) as response:
            assert response.status == 200
        while True:
            message = await next_message(jena_desk, "abandoned")
            if not any(c["call_id"] == entry["call_id"] for c in message["calls"]):
                break


async def test_screen_pops_need_the_dispatchers_own_token(verbund: lab.Verbund, start_service) -> None:
    await start_service("jena")
    async with aiohttp.ClientSession(timeout=TIMEOUT) as client:
        for token, status in ((verbund.desk_tokens["jena-d2"], 403), ("wrong", 401), (verbund.read_token, 403)):
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await connect_screen(client, verbund, "jena", "jena-d1", token)
            assert refused.value.status == status
        socket = await connect_screen(client, verbund, "jena", "jena-d1")
        await next_message(socket, "hello")
        await socket.send_str("garbage")
        assert (await next_message(socket, "error"))["error"]
        await socket.send_json({"type": "state"})
        assert (await next_message(socket, "state"))["card"] is None


async def test_a_repeat_caller_card_lists_the_earlier_call(verbund: lab.Verbund, start_service, start_desks) -> None:
    await start_service("jena")
    await start_desks("jena", ["jena-d1"])
    async with aiohttp.ClientSession(timeout=TIMEOUT) as client:
        screen = await connect_screen(client, verbund, "jena", "jena-d1")
        await next_message(screen, "hello")
        first = asyncio.create_task(place_call(verbund, "jena", "+4915112349777", talk_ms=1000))
        first_card = await next_message(screen, "card")
        assert first_card["repeat_calls"] == []
        assert await first == 0
        second = asyncio.create_task(place_call(verbund, "jena", "+4915112349777", talk_ms=1000))
        second_card = await next_message(screen, "card")
        assert [c["call_id"] for c in second_card["repeat_calls"]] == [first_card["call_id"]]
        assert second_card["repeat_calls"][0]["minutes_ago"] == 0
        assert await second == 0


async def test_a_number_calling_again_and_again_keeps_its_index_and_cards_small(verbund: lab.Verbund) -> None:
    import prometheus_client as prom

    from verbund112.store import RedisSettings, Store, keys
    from verbund112.store.records import CallRecord

    store = Store(RedisSettings(url=verbund.redis.url, timeout=1.0), prom.CollectorRegistry())
    number, now = "+4915112349888", time.time()
    try:
        for i in range(150):
            await store.save_call(CallRecord(call_id=f"jena-{i}", routed_at=now - 150 + i, entry_site="jena",
                                             caller=number, route="local"))  # fmt: skip
        assert await store.redis.zcard(keys.calls_by_number(number)) == keys.CALLS_PER_NUMBER_KEPT
        _, earlier = await store.aml_and_earlier(number, now - 3600, 11)
        assert [c.call_id for c in earlier] == [f"jena-{i}" for i in range(149, 149 - 11, -1)]
        _, newest = await store.aml_and_earlier(number, now - 1.5, 11)
        assert [c.as_dict() for c in newest] == [{"call_id": "jena-149", "at": now - 1}]
    finally:
        await store.redis.delete(keys.calls_by_number(number), *(keys.call(f"jena-{i}") for i in range(150)))
        await store.close()
