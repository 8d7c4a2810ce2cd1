"""Poison on every Redis key and channel the services use leaves both running; the next call is popped.

A broken peer, an older version or an operator with redis-cli writes garbage:
not UTF-8, broken JSON, wrong shapes, numbers out of range. Before the store
boundary, one non-UTF-8 PUBLISH on the AML update channel stopped the
services of both sites.
"""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest
import redis.asyncio as aioredis

from lab import lab
from tests.conftest import place_call
from tests.integration.test_screen_pops import TIMEOUT, connect_screen, next_message
from verbund112.service import Service
from verbund112.store import keys

pytestmark = pytest.mark.lab

NUMBER = "+4915112347777"
NOT_UTF8 = b"\xff\xfe\x80"
SHAPES = [NOT_UTF8, b'{"broken": ', b"[1, 2, 3]", b'"text"', b"null", b'{"lat": 1e999, "lon": "x", "radius_m": -1}']


async def poison_everything(client: aioredis.Redis, partner_of_both: str) -> None:
    now = time.time()
    for i, shape in enumerate(SHAPES):
        await client.lpush(keys.aml(NUMBER), shape)
        await client.set(keys.call(f"poison-{i}"), shape, ex=60)
        await client.set(keys.answered(f"poison-{i}"), shape, ex=60)
        await client.zadd(keys.calls_by_number(NUMBER), {shape: now})
        await client.zadd(keys.ABANDONED_KEY, {shape: now, f"poison-{i}".encode(): now})
        await client.set(keys.abandoned_entry(f"poison-{i}"), shape, ex=60)
        await client.zadd(keys.MOVES_KEY, {shape: now})
        await client.lpush(keys.AUDIT_KEY, shape)
        await client.set(keys.heartbeat(partner_of_both), shape, px=300)
        for channel in (keys.AML_UPDATES_CHANNEL, keys.ABANDONED_CHANNEL):
            await client.publish(channel, shape)
    for key in (keys.aml(NUMBER), keys.calls_by_number(NUMBER), keys.ABANDONED_KEY, keys.MOVES_KEY):
        await client.expire(key, 120)


def total(service: Service, family_name: str) -> float:
    return sum(sample.value for family in service.registry.collect() if family.name == family_name
               for sample in family.samples if sample.name.endswith("_total"))  # fmt: skip


async def clean_up(client: aioredis.Redis) -> None:
    await client.delete(keys.aml(NUMBER), keys.calls_by_number(NUMBER), keys.heartbeat("poison"))
    for i, shape in enumerate(SHAPES):
        await client.delete(keys.call(f"poison-{i}"), keys.answered(f"poison-{i}"), keys.abandoned_entry(f"poison-{i}"))
        await client.zrem(keys.ABANDONED_KEY, shape, f"poison-{i}")
        await client.zrem(keys.MOVES_KEY, shape)
        await client.lrem(keys.AUDIT_KEY, 0, shape)


async def test_poison_everywhere_leaves_both_services_serving_and_the_next_call_popped(
    verbund: lab.Verbund, start_service, start_desks
) -> None:
    jena: Service = await start_service("jena")
    gera: Service = await start_service("gera")
    await start_desks("jena", ["jena-d1"])
    client = aioredis.Redis.from_url(verbund.redis.url)
    try:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            screen = await connect_screen(session, verbund, "jena", "jena-d1")
            await next_message(screen, "hello")
            await next_message(screen, "abandoned")  # the list every screen gets when it connects
            for site in ("jena", "gera"):
                await poison_everything(client, site)
            # the poisoned callback list is announced: the screen gets a list without the poison
            abandoned = await next_message(screen, "abandoned")
            assert all(not c["call_id"].startswith("poison") for c in abandoned["calls"])
            call = asyncio.create_task(place_call(verbund, "jena", NUMBER, talk_ms=3000))
            card = await next_message(screen, "card", within=30)
            assert card["caller"] == NUMBER
            # of the poisoned index of the number, only what is shaped like a call id ("null" is) is shown
            assert [c["call_id"] for c in card["repeat_calls"]] == ["null"]
            assert [loc["source"] for loc in card["locations"]] != ["aml"]  # no poisoned fix shown
            assert await call == 0
        for service in (jena, gera):
            async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
                url = f"http://127.0.0.1:{service.web_port}/api/v1/status"
                headers = {"Authorization": f"Bearer {verbund.read_token}"}
                async with session.get(url, headers=headers) as response:
                    assert response.status == 200
                    assert (await response.json())["redis"]["reachable"] is True
            assert total(service, "verbund112_store_bad_values") > 0
            assert total(service, "verbund112_loop_restarts") == 0  # no loop died of it
        assert json.loads(await client.get(keys.heartbeat("jena")))["site"] == "jena"  # the heartbeats go on
    finally:
        await clean_up(client)
        await client.aclose()
