"""What the service keeps in Redis, and the key of each thing in one place.

- ``v112:aml:<e164>``: the AML fixes of a calling number, newest first (a list
  of JSON objects); the whole key expires at most 60 minutes after the last fix.
- ``v112:call:<call id>``: what the entry site knew about a call (caller,
  location, decision), for the partner that takes it over; 60 minutes.
- ``v112:rules:audit``: who changed the routing rules, when and what (newest first).
- ``v112:site:<site>:heartbeat``: a site's liveness and its queue snapshot
  (overflow.state.SiteSnapshot; see Service._heartbeat), expiring after 2 s.
- ``v112:overflow:moves``: the overflow moves of the last hour, both directions.

Caller positions are personal data: nothing here lives longer than 60 minutes.
Every call has a timeout; callers decide what a failure means (never a failed call).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from typing import Any

import redis.asyncio as aioredis

from routing.decision import AmlFix
from routing.location import Position

PERSONAL_DATA_TTL_S = 3600
AUDIT_KEY = "v112:rules:audit"
AUDIT_KEEP = 1000


def aml_key(e164: str) -> str:
    return f"v112:aml:{e164}"


def call_key(call_id: str) -> str:
    return f"v112:call:{call_id}"


def heartbeat_key(site: str) -> str:
    return f"v112:site:{site}:heartbeat"


class StoreError(Exception):
    """Redis did not answer in time or at all."""


def being_cancelled() -> bool:
    """True while the current task is being cancelled.

    redis-py can turn a cancellation that reaches it into TimeoutError or a
    ConnectionError; a loop that retries on those would then never stop.
    """
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def _guarded(coro: Any, within: float) -> Any:
    try:
        async with asyncio.timeout(within):
            return await coro
    except (TimeoutError, OSError, aioredis.RedisError) as exc:
        if being_cancelled():
            raise asyncio.CancelledError from exc
        raise StoreError(str(exc) or type(exc).__name__) from exc


async def latest_aml_fix(redis: aioredis.Redis, e164: str, within: float) -> AmlFix | None:
    raw = await _guarded(redis.lindex(aml_key(e164), 0), within)
    if raw is None:
        return None
    try:
        fix = json.loads(raw)
        position = Position(float(fix["lat"]), float(fix["lon"]), float(fix["radius_m"]), "Circle", str(fix["method"]))
        when = float(fix["time"])
    except (ValueError, KeyError, TypeError) as exc:
        raise StoreError(f"unreadable AML fix for the number: {exc}") from exc
    if not all(math.isfinite(v) for v in (position.lat, position.lon, position.radius_m, when)):
        raise StoreError("unreadable AML fix for the number: not finite")
    return AmlFix(position, when)


AML_UPDATES_CHANNEL = "v112:aml-updates"


async def add_aml_fix(
    redis: aioredis.Redis,
    e164: str,
    fix: AmlFix,
    *,
    within: float,
    ttl_s: int = PERSONAL_DATA_TTL_S,
    details: dict[str, Any] | None = None,
) -> None:
    """Prepend a fix to the number's trail, renew its expiry, tell the other services."""
    value = json.dumps(
        {
            "lat": fix.position.lat,
            "lon": fix.position.lon,
            "radius_m": fix.position.radius_m,
            "method": fix.position.method,
            "time": fix.time,
            "received": time.time(),
            **(details or {}),
        }
    )
    key = aml_key(e164)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.lpush(key, value)
        pipe.ltrim(key, 0, 99)
        pipe.expire(key, min(ttl_s, PERSONAL_DATA_TTL_S))
        # the number only: subscribers read the fix from the store
        pipe.publish(AML_UPDATES_CHANNEL, e164)
        await _guarded(pipe.execute(), within)


async def aml_trail(redis: aioredis.Redis, e164: str, within: float) -> list[dict[str, Any]]:
    raw = await _guarded(redis.lrange(aml_key(e164), 0, 99), within)
    return [json.loads(item) for item in raw]


async def save_call(redis: aioredis.Redis, call_id: str, record: dict[str, Any], within: float) -> None:
    await _guarded(redis.set(call_key(call_id), json.dumps(record), ex=PERSONAL_DATA_TTL_S), within)


async def load_call(redis: aioredis.Redis, call_id: str, within: float) -> dict[str, Any] | None:
    raw = await _guarded(redis.get(call_key(call_id)), within)
    return json.loads(raw) if raw else None


async def append_audit(redis: aioredis.Redis, entry: dict[str, Any], within: float) -> None:
    entry = {"at": time.time(), **entry}
    async with redis.pipeline(transaction=True) as pipe:
        pipe.lpush(AUDIT_KEY, json.dumps(entry))
        pipe.ltrim(AUDIT_KEY, 0, AUDIT_KEEP - 1)
        await _guarded(pipe.execute(), within)


async def read_audit(redis: aioredis.Redis, within: float, count: int = 100) -> list[dict[str, Any]]:
    raw = await _guarded(redis.lrange(AUDIT_KEY, 0, count - 1), within)
    return [json.loads(item) for item in raw]


# -- calls: who called, who answered, who hung up unanswered ---------------------

ABANDONED_KEY = "v112:abandoned"
ABANDONED_CHANNEL = "v112:abandoned-updates"


def calls_by_number_key(e164: str) -> str:
    return f"v112:calls-by-number:{e164}"


def answered_key(call_id: str) -> str:
    return f"v112:answered:{call_id}"


# A number that calls again and again (a pocket dial, a stuck PBX) must not make every card
# heavier: each number keeps its newest calls only, and a card shows the newest few.
CALLS_PER_NUMBER_KEPT = 100
REPEAT_CALLS_SHOWN = 10


async def index_call(redis: aioredis.Redis, e164: str, call_id: str, at: float, within: float) -> None:
    key = calls_by_number_key(e164)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.zadd(key, {call_id: at})
        pipe.zremrangebyscore(key, 0, at - PERSONAL_DATA_TTL_S)
        pipe.zremrangebyrank(key, 0, -CALLS_PER_NUMBER_KEPT - 1)
        pipe.expire(key, PERSONAL_DATA_TTL_S)
        await _guarded(pipe.execute(), within)


async def earlier_calls(
    redis: aioredis.Redis, e164: str, since: float, within: float, most: int = REPEAT_CALLS_SHOWN + 1
) -> list[dict[str, Any]]:
    """The newest calls of a number since a time, newest first (at most ``most``: the call itself included)."""
    key = calls_by_number_key(e164)
    raw = await _guarded(redis.zrevrangebyscore(key, "+inf", since, start=0, num=most, withscores=True), within)
    return [{"call_id": member.decode(), "at": score} for member, score in raw]


async def mark_answered(redis: aioredis.Redis, call_id: str, site: str, dispatcher: str, within: float) -> None:
    value = json.dumps({"site": site, "dispatcher": dispatcher, "at": time.time()})
    await _guarded(redis.set(answered_key(call_id), value, ex=PERSONAL_DATA_TTL_S), within)


async def was_answered(redis: aioredis.Redis, call_id: str, within: float) -> bool:
    return bool(await _guarded(redis.exists(answered_key(call_id)), within))


def abandoned_entry_key(call_id: str) -> str:
    return f"{ABANDONED_KEY}:{call_id}"


async def add_abandoned(redis: aioredis.Redis, entry: dict[str, Any], within: float) -> None:
    """A 112 call that ended before anyone answered: on every dispatcher's callback list.

    An index (sorted by time) plus one key per call, each expiring after 60 minutes.
    """
    call_id = entry["call_id"]
    async with redis.pipeline(transaction=True) as pipe:
        pipe.set(abandoned_entry_key(call_id), json.dumps(entry), ex=PERSONAL_DATA_TTL_S)
        pipe.zadd(ABANDONED_KEY, {call_id: entry["at"]})
        pipe.zremrangebyscore(ABANDONED_KEY, 0, time.time() - PERSONAL_DATA_TTL_S)
        pipe.expire(ABANDONED_KEY, PERSONAL_DATA_TTL_S)
        pipe.publish(ABANDONED_CHANNEL, call_id)
        await _guarded(pipe.execute(), within)


async def abandoned_calls(redis: aioredis.Redis, within: float) -> list[dict[str, Any]]:
    ids = await _guarded(redis.zrevrangebyscore(ABANDONED_KEY, "+inf", time.time() - PERSONAL_DATA_TTL_S), within)
    if not ids:
        return []
    raw = await _guarded(redis.mget([abandoned_entry_key(i.decode()) for i in ids]), within)
    return [json.loads(item) for item in raw if item is not None]


async def callback_done(redis: aioredis.Redis, call_id: str, within: float) -> bool:
    async with redis.pipeline(transaction=True) as pipe:
        pipe.zrem(ABANDONED_KEY, call_id)
        pipe.delete(abandoned_entry_key(call_id))
        pipe.publish(ABANDONED_CHANNEL, call_id)
        removed, _, _ = await _guarded(pipe.execute(), within)
    return bool(removed)


# -- overflow moves ------------------------------------------------------------

MOVES_KEY = "v112:overflow:moves"
MOVES_KEEP_S = 3600


async def record_move(redis: aioredis.Redis, entry: dict[str, Any], within: float) -> None:
    """One overflow move and its outcome, for the supervisor view (kept one hour)."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.zadd(MOVES_KEY, {json.dumps(entry, sort_keys=True): entry["at"]})
        pipe.zremrangebyscore(MOVES_KEY, 0, time.time() - MOVES_KEEP_S)
        pipe.expire(MOVES_KEY, MOVES_KEEP_S)
        await _guarded(pipe.execute(), within)


async def recent_moves(redis: aioredis.Redis, since: float, within: float) -> list[dict[str, Any]]:
    raw = await _guarded(redis.zrangebyscore(MOVES_KEY, since, "+inf"), within)
    return [json.loads(item) for item in raw]
