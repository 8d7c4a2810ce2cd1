"""Personal data in the Verbund's Redis expires in time, whatever is appended later.

A busy lab run (AML pushes, calls answered at both sites, a caller moved by
the overflow, an abandoned call, two calls and two AML fixes of one number),
then every key in the lab's Redis is read (SCAN) and its TTL checked against
the maximum of its pattern in the store's key table (verbund112/store/keys.py).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from lab import lab
from telephony import events
from tests.conftest import next_event, place_call
from tests.integration.test_screen_pops import post_aml
from verbund112.store import keys

pytestmark = pytest.mark.lab
NUMBER = "+4915112349901"
OTHER = "+4915112349902"


def key_pattern(entry: keys.Entry) -> re.Pattern[str]:
    parts = re.split(r"<[^>]+>", entry.pattern)
    return re.compile("^" + "[^:]+".join(re.escape(part) for part in parts) + "$")


TABLE = [(key_pattern(entry), entry) for entry in keys.TABLE if entry.kind != "channel"]


def entry_of(key: str) -> keys.Entry:
    found = [entry for pattern, entry in TABLE if pattern.match(key)]
    assert len(found) == 1, f"{key}: not exactly one pattern of the key table matches ({found})"
    return found[0]


@pytest.fixture
async def redis_client(verbund: lab.Verbund) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(verbund.redis.url, socket_timeout=5)
    yield client
    await client.aclose()


async def ttl_s(client: aioredis.Redis, key: str) -> float:
    return float(await client.pttl(key)) / 1000


def life_left(created_by: float) -> float:
    """The most life an entry created before ``created_by`` has left."""
    return created_by + keys.PERSONAL_DATA_TTL_S - time.time()


async def plans_seen(service, into: list[str]) -> None:
    """Records each different reason the mover gives while the test runs (shown if no move is recorded)."""
    while True:
        mover = service.overflow
        local, partner = mover.snapshot(), mover.partner
        seen = (
            f"{mover.last_plan.why_not!r} local available {local.available} waiting {len(local.waiting)} "
            f"{[(w.call_id, w.movable, w.ringing) for w in local.waiting]}; partner "
            f"{None if partner is None else (partner.ami_connected, partner.available, len(partner.waiting))}"
        )
        if not into or into[-1] != seen:
            into.append(seen)
        await asyncio.sleep(0.1)


async def test_after_a_busy_run_every_key_expires_within_its_maximum_and_appends_never_extend_an_old_entry(
    verbund: lab.Verbund, start_service, start_desks, redis_client: aioredis.Redis
) -> None:
    jena = await start_service("jena")
    gera = await start_service("gera")
    await start_desks("jena", ["jena-d1"])
    await start_desks("gera", ["gera-d1"])
    plans: list[str] = []
    watching = asyncio.create_task(plans_seen(jena, plans))
    await post_aml(verbund, "jena", NUMBER, 50.9301, 11.5902)
    first_fix_by = time.time()  # the first fix was received before this
    with jena.hub.subscribe() as seen, gera.hub.subscribe() as seen_at_gera:
        talking = asyncio.create_task(place_call(verbund, "jena", NUMBER, talk_ms=20000))
        await next_event(seen, events.DispatcherAnswered, lambda e: e.dispatcher == "jena-d1")
        first_call_by = time.time()  # the first call of NUMBER was routed before this
        # the same number again, while Jena's only desk is busy: moved to Gera's free desk
        moved = asyncio.create_task(place_call(verbund, "jena", NUMBER, talk_ms=8000))
        await next_event(seen_at_gera, events.DispatcherAnswered, lambda e: e.dispatcher == "gera-d1", within=40)
        # both desks busy: this caller gives up before anyone answers
        assert await place_call(verbund, "jena", OTHER, hang_up_after_ms=1500) == 0
        await next_event(seen, events.CallEnded, lambda e: e.caller_number == OTHER)
        await post_aml(verbund, "gera", NUMBER, 50.9311, 11.5912)  # a later fix of the same number
        assert await moved == 0
        assert await talking == 0
    deadline = time.monotonic() + 15
    while not await redis_client.exists(keys.MOVES_KEY):  # the move's outcome is written when it is confirmed
        assert time.monotonic() < deadline, "no overflow move recorded; Jena's mover said:\n" + "\n".join(plans)
        await asyncio.sleep(0.2)
    watching.cancel()

    # appending to a key never extended the life of its oldest entry
    assert len(await redis_client.zrange(keys.calls_by_number(NUMBER), 0, -1)) == 2
    assert await ttl_s(redis_client, keys.calls_by_number(NUMBER)) <= life_left(first_call_by)
    assert await redis_client.llen(keys.aml(NUMBER)) == 2
    assert await ttl_s(redis_client, keys.aml(NUMBER)) <= life_left(first_fix_by)

    # every key of the store, whoever wrote it, expires within the maximum of its kind
    seen_kinds = set()
    async for raw in redis_client.scan_iter(count=1000):
        key = raw.decode()
        entry = entry_of(key)
        seen_kinds.add(entry.pattern)
        ttl = await ttl_s(redis_client, key)
        if entry.personal:
            assert ttl > 0, f"{key} holds personal data and does not expire"
        if entry.max_age_s is not None:
            assert 0 < ttl <= entry.max_age_s, f"{key}: TTL {ttl} s, at most {entry.max_age_s} s allowed"
    for kind in ("v112:aml:<e164>", "v112:call:<call id>", "v112:calls-by-number:<e164>", "v112:abandoned",
                 "v112:abandoned:<call id>", "v112:overflow:moves", "v112:answered:<call id>"):  # fmt: skip
        assert kind in seen_kinds, f"the busy run wrote no {kind}"
