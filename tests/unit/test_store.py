"""The store against a real redis-server: every value it reads is validated; bad ones are skipped and counted.

Poison is written the way a broken peer, an old version or an operator with
redis-cli would: raw bytes past the store. No read may raise because of data.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator

import prometheus_client as prom
import pytest

from lab.processes import RedisServer
from overflow.state import SiteSnapshot
from routing.decision import AmlFix
from routing.location import Position
from verbund112.store import AbandonedChanged, AmlUpdated, RedisSettings, Resubscribed, Store, StoreError, keys
from verbund112.store.records import (
    AbandonedCall,
    AmlFixRecord,
    AnsweredMark,
    AuditEntry,
    CallRecord,
    MoveRecord,
)

NUMBER = "+4915112345678"
NOT_UTF8 = b"\xff\xfe\x80"
BROKEN_JSON = b'{"lat": 50.9,'
POISON = [
    NOT_UTF8,
    BROKEN_JSON,
    b"[]",
    b'"a string"',
    b"null",
    b'{"lat": "north", "lon": 11.5, "radius_m": 10, "time": 1}',
    b'{"lat": 91, "lon": 11.5, "radius_m": 10, "time": 1}',
    b'{"lat": 50.9, "lon": 11.5, "radius_m": -1, "time": 1}',
    b'{"lat": 50.9, "lon": 11.5, "radius_m": 10, "time": NaN}',
    b'{"lat": 50.9, "lon": 11.5, "radius_m": 10, "time": Infinity}',
    b'{"lon": 11.5, "radius_m": 10, "time": 1}',
]


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def store(redis_server: RedisServer) -> AsyncIterator[Store]:
    store = Store(RedisSettings(url=redis_server.url, timeout=1.0), prom.CollectorRegistry())
    await store.redis.flushdb()
    yield store
    await store.close()


def bad(store: Store, what: str) -> float:
    return store.bad_values.labels(what)._value.get()


async def test_redis_answers_are_parsed_by_hiredis(store: Store) -> None:
    """hiredis (C), not redis-py's own Python parser: a share of the service's CPU per call."""
    pool = store.redis.connection_pool
    connection = await pool.get_connection()
    try:
        await connection.send_command("PING")
        assert await connection.read_response() in (b"PONG", "PONG")
        assert type(connection._parser).__name__ == "_AsyncHiredisParser"
    finally:
        await pool.release(connection)


def good_fix(at: float | None = None) -> AmlFixRecord:
    at = time.time() - 1 if at is None else at
    return AmlFixRecord.of(AmlFix(Position(50.93, 11.59, 12.0, "Circle", "GNSS"), at), at + 1, format="https")


async def test_a_good_fix_round_trips(store: Store) -> None:
    at = time.time() - 1
    await store.add_aml_fix(NUMBER, good_fix(at), ttl_s=60)
    fix = await store.latest_aml_fix(NUMBER)
    assert fix is not None and (fix.position.lat, fix.position.radius_m, fix.time) == (50.93, 12.0, at)
    assert 0 < await store.redis.ttl(keys.aml(NUMBER)) <= 60


@pytest.mark.parametrize("poison", POISON)
async def test_a_poisoned_newest_fix_is_no_fix(store: Store, poison: bytes) -> None:
    await store.redis.lpush(keys.aml(NUMBER), poison)
    assert await store.latest_aml_fix(NUMBER) is None
    assert bad(store, "aml-fix") == 1


async def test_a_trail_keeps_its_good_fixes_around_the_poison(store: Store) -> None:
    first, second = time.time() - 10, time.time() - 5
    await store.add_aml_fix(NUMBER, good_fix(first), ttl_s=60)
    await store.redis.lpush(keys.aml(NUMBER), *POISON)
    await store.add_aml_fix(NUMBER, good_fix(second), ttl_s=60)
    trail = await store.aml_trail(NUMBER)
    assert [fix.time for fix in trail] == [second, first]
    assert bad(store, "aml-fix") == len(POISON)


@pytest.mark.parametrize(
    "poison",
    [NOT_UTF8, BROKEN_JSON, b"[]", b'{"call_id": "jena-1"}', b'{"call_id": "", "routed_at": 1, "entry_site": "jena",'
     b' "caller": "+49", "route": "local"}', b'{"call_id": "jena-1", "routed_at": -5, "entry_site": "jena", "caller": '
     b'"+49", "route": "local"}', b'{"call_id": "jena-1", "routed_at": 1, "entry_site": "jena", "caller": "+49", '
     b'"route": "local", "location": {"source": "aml", "position": {"lat": 500, "lon": 1, "radius_m": 1}}}'],
)  # fmt: skip
async def test_a_poisoned_call_record_reads_as_unknown(store: Store, poison: bytes) -> None:
    await store.redis.set(keys.call("jena-1"), poison)
    assert await store.load_call("jena-1") is None
    assert bad(store, "call") == 1


async def test_a_call_record_round_trips_with_its_index(store: Store) -> None:
    now = time.time()
    record = CallRecord(call_id="jena-1.1", routed_at=now, entry_site="jena", caller=NUMBER, route="partner",
                        routed_to="gera", reason="AML in Gera", certain=True, flags=["border"])  # fmt: skip
    await store.save_call(record)
    assert await store.load_call("jena-1.1") == record
    data = await store.answered_card_data(
        "jena-1.1", AnsweredMark(site="gera", dispatcher="gera-d1", at=now), NUMBER, need_record=True,
        since=now - 60, most=11,
    )  # fmt: skip
    assert data.record == record
    assert [c.call_id for c in data.earlier_calls] == ["jena-1.1"]
    assert await store.redis.exists(keys.answered("jena-1.1"))


async def test_poisoned_members_of_a_numbers_index_are_skipped(store: Store) -> None:
    now = time.time()
    await store.redis.zadd(keys.calls_by_number(NUMBER), {NOT_UTF8: now, b"jena 1; DROP": now, b"jena-2.2": now})
    _, earlier = await store.aml_and_earlier(NUMBER, now - 60, 11)
    assert [c.call_id for c in earlier] == ["jena-2.2"]
    assert bad(store, "calls-by-number") == 2


async def test_poisoned_entries_of_the_callback_list_are_skipped(store: Store) -> None:
    now = time.time()
    await store.add_abandoned_once(AbandonedCall(call_id="jena-3.1", caller=NUMBER, site="jena", at=now, waited_s=12))
    await store.redis.zadd(keys.ABANDONED_KEY, {b"jena-3.2": now, NOT_UTF8: now, b"jena-3.3": now})
    await store.redis.set(keys.abandoned_entry("jena-3.2"), BROKEN_JSON)
    await store.redis.set(keys.abandoned_entry("jena-3.3"), b'{"call_id": "jena-3.3", "caller": 5}')
    calls = await store.abandoned_calls()
    assert [c.call_id for c in calls] == ["jena-3.1"]
    assert bad(store, "abandoned") == 3
    assert await store.callback_done("jena-3.1") is True
    assert await store.callback_done("jena-3.1") is False


async def test_poisoned_moves_and_audit_entries_are_skipped(store: Store) -> None:
    now = time.time()
    move = MoveRecord.model_validate({"call_id": "jena-4.1", "from": "jena", "to": "gera", "at": now,
                                      "outcome": "moved"})  # fmt: skip
    await store.record_move(move)
    await store.redis.zadd(keys.MOVES_KEY, {NOT_UTF8: now, b'{"call_id": "jena-4.2"}': now})
    moves = await store.recent_moves(now - 60)
    assert moves == [move]
    assert moves[0].as_dict()["from"] == "jena"
    entry = AuditEntry(at=now, site="jena", who="alice", action="upload", result="applied", changes=["x"])
    await store.append_audit(entry)
    await store.redis.lpush(keys.AUDIT_KEY, BROKEN_JSON, b"[1, 2]")
    assert await store.read_audit() == [entry]
    assert bad(store, "overflow-move") == 2
    assert bad(store, "rules-audit") == 2


@pytest.mark.parametrize(
    ("poison", "problem"),
    [
        (NOT_UTF8, "unreadable heartbeat"),
        (BROKEN_JSON, "unreadable heartbeat"),
        (b"[]", "malformed heartbeat"),
        (b'{"site": "gera", "at": 1e300, "ami_connected": true, "waiting": 5, "desks": {}}', "malformed heartbeat"),
        (b'{"site": "gera", "at": "now"}', "malformed heartbeat"),
    ],
)
async def test_a_poisoned_partner_heartbeat_means_not_reporting(store: Store, poison: bytes, problem: str) -> None:
    await store.redis.set(keys.heartbeat("gera"), poison)
    own = SiteSnapshot("jena", time.time(), True, (), ())
    report = await store.exchange_heartbeat(own, "gera", time.time())
    assert (report.snapshot, report.problem) == (None, problem)
    assert bad(store, "heartbeat") == 1
    assert json.loads(await store.redis.get(keys.heartbeat("jena")))["site"] == "jena"


async def test_a_stale_partner_heartbeat_is_not_reporting_and_not_bad_data(store: Store) -> None:
    old = SiteSnapshot("gera", time.time() - 60, True, (), ())
    await store.redis.set(keys.heartbeat("gera"), json.dumps(old.to_json()))
    report = await store.exchange_heartbeat(SiteSnapshot("jena", time.time(), True, (), ()), "gera", time.time())
    assert report.snapshot is None and "old" in report.problem
    assert bad(store, "heartbeat") == 0


async def test_poisoned_announcements_are_skipped_and_the_next_good_one_arrives(store: Store) -> None:
    received = store.announcements()
    # the store says when it listens (Resubscribed); then poison and a good one are published
    async with asyncio.timeout(5):
        assert await anext(received) == Resubscribed()
    first = asyncio.ensure_future(anext(received))
    for poison in (NOT_UTF8, b"not a number", b"+49 365 1", b""):
        await store.redis.publish(keys.AML_UPDATES_CHANNEL, poison)
    await store.redis.publish(keys.ABANDONED_CHANNEL, NOT_UTF8)
    await store.redis.publish(keys.AML_UPDATES_CHANNEL, NUMBER)
    await store.redis.publish(keys.ABANDONED_CHANNEL, "jena-5.1")
    async with asyncio.timeout(5):
        assert await first == AmlUpdated(NUMBER)
        assert await anext(received) == AbandonedChanged("jena-5.1")
    await received.aclose()
    assert bad(store, "aml-update") == 4
    assert bad(store, "abandoned-update") == 1


async def test_a_store_that_does_not_answer_raises_its_own_error(redis_server: RedisServer) -> None:
    from lab.processes import free_tcp_port

    store = Store(RedisSettings(url=f"redis://127.0.0.1:{free_tcp_port()}/0", timeout=0.2), prom.CollectorRegistry())
    with pytest.raises(StoreError):
        await store.latest_aml_fix(NUMBER)
    assert store.reachable is False
    await store.close()


async def test_a_reply_later_than_the_timeout_is_never_taken_for_the_next_commands(redis_server: RedisServer) -> None:
    """Only the store's own timeout bounds a command (no socket_timeout): the connection of a command
    it cut off must not come back to the pool with that command's reply still on its way."""
    late = asyncio.Event()  # set: the next reply from Redis is held back past the store's timeout
    relays: set[asyncio.Task[None]] = set()

    async def relay(source: asyncio.StreamReader, sink: asyncio.StreamWriter, hold: bool) -> None:
        try:
            while data := await source.read(65536):
                if hold and late.is_set():
                    late.clear()
                    await asyncio.sleep(0.5)
                sink.write(data)
                await sink.drain()
        except ConnectionError:
            pass
        finally:
            sink.close()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", redis_server.port)
        for task in (relay(reader, up_writer, False), relay(up_reader, writer, True)):
            relays.add(asyncio.create_task(task))

    proxy = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = proxy.sockets[0].getsockname()[1]
    store = Store(RedisSettings(url=f"redis://127.0.0.1:{port}/0", timeout=0.2), prom.CollectorRegistry())
    other = "+4915187654321"
    try:
        async with asyncio.timeout(10):
            await store.redis.delete(keys.aml(NUMBER), keys.aml(other))
            await store.add_aml_fix(other, good_fix(), ttl_s=60)
            late.set()
            with pytest.raises(StoreError):
                await store.latest_aml_fix(other)  # cut off by the store's timeout
            assert await store.latest_aml_fix(NUMBER) is None  # not the late reply: the other number's fix
            assert await store.latest_aml_fix(other) is not None
    finally:
        await store.close()
        proxy.close()
        await proxy.wait_closed()
        await asyncio.wait(relays, timeout=5)


# -- the callback list: each abandoned call once ------------------------------------


def abandoned(call_id: str, at: float | None = None) -> AbandonedCall:
    return AbandonedCall(call_id=call_id, caller=NUMBER, site="jena", at=time.time() if at is None else at, waited_s=7)


async def test_an_abandoned_call_reported_twice_is_listed_once_and_not_again_after_its_callback(store: Store) -> None:
    assert await store.add_abandoned_once(abandoned("jena-6.1")) == "added"
    assert await store.add_abandoned_once(abandoned("jena-6.1")) == "seen"  # the outbox entry after a reconnect
    assert [c.call_id for c in await store.abandoned_calls()] == ["jena-6.1"]
    assert await store.callback_done("jena-6.1") is True
    assert await store.add_abandoned_once(abandoned("jena-6.1")) == "seen"
    assert await store.abandoned_calls() == []


async def test_a_call_a_dispatcher_answered_is_never_listed(store: Store) -> None:
    await store.redis.set(keys.answered("jena-6.2"), b'{"site": "gera", "dispatcher": "gera-d1", "at": 1}')
    assert await store.add_abandoned_once(abandoned("jena-6.2")) == "answered"
    assert await store.abandoned_calls() == []


async def test_an_abandoned_call_older_than_the_retention_is_not_listed(store: Store) -> None:
    assert await store.add_abandoned_once(abandoned("jena-6.3", at=time.time() - 3700)) == "expired"
    assert await store.abandoned_calls() == []


# -- retention: an entry never outlives its deadline, whatever is appended later -----


@pytest.fixture
async def short_store(redis_server: RedisServer) -> AsyncIterator[Store]:
    """A store whose personal data lives 100 s."""
    store = Store(RedisSettings(url=redis_server.url, timeout=1.0, personal_data_max_age_s=100),
                  prom.CollectorRegistry())  # fmt: skip
    await store.redis.flushdb()
    yield store
    await store.close()


async def ttl_s(store: Store, key: str) -> float:
    return float(await store.redis.pttl(key)) / 1000


async def test_appending_to_a_numbers_calls_does_not_extend_the_oldest_calls_life(short_store: Store) -> None:
    now = time.time()
    for call_id, at in (("jena-7.1", now - 60), ("jena-7.2", now)):
        await short_store.save_call(CallRecord(call_id=call_id, routed_at=at, entry_site="jena", caller=NUMBER,
                                               route="local"))  # fmt: skip
    index = keys.calls_by_number(NUMBER)
    assert 30 < await ttl_s(short_store, index) <= 40  # the oldest call's deadline: 100 s after it, 60 s ago
    await short_store.save_call(CallRecord(call_id="jena-7.3", routed_at=now - 101, entry_site="jena",
                                           caller=NUMBER, route="local"))  # fmt: skip
    assert [m.decode() for m in await short_store.redis.zrange(index, 0, -1)] == ["jena-7.1", "jena-7.2"]
    assert 0 < await ttl_s(short_store, keys.call("jena-7.2")) <= 100


async def test_appending_to_an_aml_trail_does_not_extend_the_oldest_fixs_life(short_store: Store) -> None:
    now = time.time()
    await short_store.add_aml_fix(NUMBER, good_fix(now - 71), ttl_s=3600)  # received 70 s ago
    await short_store.add_aml_fix(NUMBER, good_fix(now - 1), ttl_s=3600)
    assert 20 < await ttl_s(short_store, keys.aml(NUMBER)) <= 30
    await short_store.add_aml_fix(NUMBER, good_fix(now - 2), ttl_s=50)  # a shorter aml.retention_s drops the old one
    assert [f.time for f in await short_store.aml_trail(NUMBER)] == [now - 2, now - 1]
    assert 40 < await ttl_s(short_store, keys.aml(NUMBER)) <= 50


async def test_the_callback_list_expires_with_its_oldest_call(short_store: Store) -> None:
    now = time.time()
    await short_store.add_abandoned_once(abandoned("jena-8.1", at=now - 80))
    await short_store.add_abandoned_once(abandoned("jena-8.2", at=now))
    assert 10 < await ttl_s(short_store, keys.ABANDONED_KEY) <= 20
    assert 10 < await ttl_s(short_store, keys.abandoned_entry("jena-8.1")) <= 20
    assert 90 < await ttl_s(short_store, keys.abandoned_entry("jena-8.2")) <= 100


async def test_a_creation_time_in_the_future_counts_as_now(short_store: Store) -> None:
    await short_store.add_abandoned_once(abandoned("jena-8.3", at=time.time() + 10_000))
    assert await ttl_s(short_store, keys.ABANDONED_KEY) <= 100
    assert await ttl_s(short_store, keys.abandoned_entry("jena-8.3")) <= 100


async def test_a_call_record_is_never_overwritten(store: Store) -> None:
    """A second request for the same call id (a forged one, say) keeps the first record and index."""
    now = time.time()
    first = CallRecord(call_id="jena-1.1", routed_at=now, entry_site="jena", caller=NUMBER, route="local",
                       routed_to="jena", reason="PIDF-LO in Jena")  # fmt: skip
    forged = first.model_copy(update={"caller": "+4915199999999", "routed_at": now + 1, "reason": "forged"})
    created = [await store.save_call(first), await store.save_call(forged)]
    assert await store.load_call("jena-1.1") == first
    assert await store.redis.exists(keys.calls_by_number("+4915199999999")) == 0
    assert [c.call_id for c in (await store.aml_and_earlier(NUMBER, now - 60, 11))[1]] == ["jena-1.1"]
    assert created == [True, False]
    assert store.call_records_kept._value.get() == 1
    assert 0 < await store.redis.ttl(keys.call("jena-1.1")) <= store.max_age_s


async def test_a_call_record_of_an_unusable_number_is_kept_without_an_index(store: Store) -> None:
    record = CallRecord(call_id="jena-2.1", routed_at=time.time(), entry_site="jena", caller="110", route="local")
    assert await store.save_call(record) is True
    assert await store.load_call("jena-2.1") == record
    assert await store.redis.keys(keys.calls_by_number("*")) == []


async def test_a_store_call_cancelled_under_load_ends_its_task(store: Store) -> None:
    """redis-py can swallow a cancellation and answer as if nothing happened: the store raises it again,
    or a writer loop (the call-record outbox) would go on at stop and the service never stop."""
    written = 0
    busy = asyncio.Event()

    async def writer() -> None:
        nonlocal written
        while True:
            await store.save_call(CallRecord(call_id=f"jena-{written}", routed_at=time.time(), entry_site="jena",
                                             caller=NUMBER, route="local"))  # fmt: skip
            written += 1
            if written == 300:
                busy.set()

    task = asyncio.create_task(writer())
    await asyncio.wait_for(busy.wait(), 10)
    task.cancel()
    await asyncio.wait({task}, timeout=5)
    assert task.cancelled(), "the writer went on writing after it was cancelled"
