"""The Verbund's Redis survives the loss of its master: a real Sentinel set (redis-server and
redis-sentinel, master "jena", replica "gera", sentinels jena, gera, witness), killed with kill -9.

Nothing accepted is lost: every AML fix the intake took (its 2xx) is readable after the
failover, the card of a dispatcher holding the caller's call gets the fixes written while
the subscription was down, and the killed node comes back as a replica. A running service
follows the failover by itself: the next call's card comes, with the store's data. With no
master at all the service still routes (degraded, and says so). The failover time and the
pop gap are printed (behaviour is asserted, never timings).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import prometheus_client as prom
import pytest

from lab import lab
from lab.processes import RedisSentinelSet, wait_until
from routing.decision import AmlFix, Position
from telephony.events import DispatcherAnswered
from tests.conftest import next_event, place_call
from tests.integration.test_screen_pops import TIMEOUT, connect_screen, next_message, post_aml
from tests.support import redis_sets
from verbund112.features.aml_sink import AmlSink
from verbund112.features.hub import CallRouted, EventHub
from verbund112.features.screen_pops import ScreenPops
from verbund112.store import RedisSettings, Store, StoreError
from verbund112.store.records import AmlFixRecord

pytestmark = pytest.mark.lab

NUMBERS = [f"+4915112360{i:03d}" for i in range(20)]
WRITES_BEFORE_KILL = 20
WRITES_AFTER_RECOVERY = 20


@pytest.fixture(scope="module")
def sentinel_set(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisSentinelSet]:
    with redis_sets.started(RedisSentinelSet(Path(tmp_path_factory.mktemp("sentinel-set")))) as redis_set:
        yield redis_set


@contextlib.asynccontextmanager
async def store_of(redis_set: RedisSentinelSet) -> AsyncIterator[Store]:
    settings = RedisSettings(
        sentinels=redis_set.sentinel_addresses, master_name=redis_set.master_name, password=redis_set.password,
        sentinel_password=redis_set.sentinel_password,
    )  # fmt: skip
    store = Store(settings, prom.CollectorRegistry())
    try:
        yield store
    finally:
        await store.close()


class Screens:
    """The dispatchers' screens: when each AML location reached a card."""

    def __init__(self) -> None:
        self.locations: list[tuple[float, str, float]] = []  # (arrived, dispatcher, fix time)
        self.changed = asyncio.Event()

    def send(self, dispatcher: str, message: dict[str, Any]) -> int:
        if message["type"] == "location":
            self.locations.append((time.monotonic(), dispatcher, message["location"]["fix_time"]))
        self.changed.set()
        return 1

    def broadcast(self, message: dict[str, Any]) -> None:
        self.changed.set()

    async def wait(self) -> None:
        self.changed.clear()
        await self.changed.wait()

    def newest(self) -> dict[str, float]:
        shown: dict[str, float] = {}
        for _, dispatcher, fix_time in self.locations:
            shown[dispatcher] = max(shown.get(dispatcher, 0.0), fix_time)
        return shown


def holder(number: str) -> str:
    return f"d{NUMBERS.index(number)}"


@dataclass
class Writer:
    """An AML sender: a fix every 50 ms, each answer recorded (accepted, or the 503 of a StoreError)."""

    sink: AmlSink
    accepted: list[tuple[float, str, float]] = field(default_factory=list)  # (sent at, number, fix time)
    first_failure: float | None = None
    recovered: float | None = None

    async def send(self, number: str) -> None:
        sent, fix_time = time.monotonic(), time.time()
        record = AmlFixRecord.of(AmlFix(Position(50.93, 11.59, 10.0, "Circle", "GNSS"), fix_time), fix_time)
        try:
            await self.sink.add_aml_fix(number, record, 3600)
        except StoreError:  # the intake's 503: the sender retries, nothing was accepted
            self.first_failure = self.first_failure or time.monotonic()
            return
        self.accepted.append((sent, number, fix_time))
        if self.first_failure is not None and self.recovered is None:
            self.recovered = time.monotonic()

    def done(self) -> bool:
        recovered = self.recovered
        return recovered is not None and sum(1 for a in self.accepted if a[0] > recovered) >= WRITES_AFTER_RECOVERY

    async def run(self, kill_master: Any) -> None:
        i = 0
        while not self.done():
            await self.send(NUMBERS[i % len(NUMBERS)])
            i += 1
            if i == WRITES_BEFORE_KILL:
                await asyncio.to_thread(kill_master)
            await asyncio.sleep(0.05)  # the sender's pace, about 20 fixes a second


async def every_card_shows_its_last_fix(screens: Screens, accepted: list[tuple[float, str, float]]) -> list[float]:
    """Wait until each card shows its number's last accepted fix; how long each fix took from its
    sender to the card."""
    last = {number: fix_time for _, number, fix_time in accepted}
    async with asyncio.timeout(15):
        while any(screens.newest().get(holder(n), 0.0) < t for n, t in last.items()):
            await screens.wait()
    return [
        min(at for at, d, t in screens.locations if d == holder(number) and t >= fix_time) - sent
        for sent, number, fix_time in accepted
    ]


async def test_killing_the_master_loses_no_accepted_fix_and_the_cards_get_what_was_written_meanwhile(
    sentinel_set: RedisSentinelSet,
) -> None:
    dropped = prom.Counter("verbund112_outbox_dropped", "", ["outbox"], registry=prom.CollectorRegistry())
    async with store_of(sentinel_set) as writer_store, store_of(sentinel_set) as reader:
        writer = Writer(AmlSink(writer_store, dropped))
        screens = Screens()
        pops = ScreenPops(site="jena", partner="gera", store=reader, screens=screens, hub=EventHub(),
                          places=lambda: None, registry=prom.CollectorRegistry())  # fmt: skip
        for number in NUMBERS:  # each dispatcher holds a call from one number (no AML on the card yet)
            pops.ledger.show(holder(number), {"call_id": f"jena-{holder(number)}", "caller": number, "locations": []})
        async with asyncio.TaskGroup() as tasks:
            following = tasks.create_task(pops.follow_announcements())
            confirming = tasks.create_task(writer.sink.outbox.run())
            async with asyncio.timeout(15):
                await screens.wait()  # subscribed: the callback list was read once
            assert sentinel_set.master() == "jena"
            async with asyncio.timeout(60):
                await writer.run(lambda: sentinel_set.kill("jena"))
            assert sentinel_set.master() == "gera"
            assert writer.first_failure is not None and writer.recovered is not None

            async with store_of(sentinel_set) as checker:
                for _, number, fix_time in writer.accepted:
                    assert fix_time in [f.time for f in await checker.aml_trail(number)], "an accepted fix was lost"
            delays = await every_card_shows_its_last_fix(screens, writer.accepted)
            arrivals = sorted(at for at, _, _ in screens.locations)
            pop_gap = max(b - a for a, b in itertools.pairwise(arrivals))
            gera = f"127.0.0.1:{sentinel_set.nodes['gera'].port}"
            assert writer_store.status()["master"] == reader.status()["master"] == gera
            assert writer_store.status()["failovers"] == reader.status()["failovers"] == 1
            print(
                f"\nREDIS FAILOVER: {len(writer.accepted)} fixes accepted, 0 lost; failover time (first failed write "
                f"-> first accepted write) {writer.recovered - writer.first_failure:.2f} s; pop gap (longest time "
                f"no location reached a card) {pop_gap:.2f} s; accepted fix sent -> on its card: max "
                f"{max(delays):.2f} s, median {sorted(delays)[len(delays) // 2]:.3f} s; accepted on the master "
                f"only (kept, written again): {writer.sink.outbox.unconfirmed}"
            )

            # the killed node comes back as a replica, and what was on the master only reaches it
            await asyncio.to_thread(sentinel_set.restart, "jena")
            assert sentinel_set.nodes["jena"].role() == "slave" and sentinel_set.master() == "gera"
            async with asyncio.timeout(15):
                while writer.sink.outbox.unconfirmed:  # noqa: ASYNC110 (no event for a replica's ack)
                    await asyncio.sleep(0.1)
            with sentinel_set.nodes["jena"].client() as replica:
                for _, number, fix_time in writer.accepted:
                    trail = await asyncio.to_thread(replica.lrange, f"v112:aml:{number}", 0, -1)
                    assert any(f'"time":{fix_time}'.encode() in fix for fix in trail)
            following.cancel()
            confirming.cancel()


async def test_a_demoted_master_is_left_for_the_new_one_by_itself(sentinel_set: RedisSentinelSet) -> None:
    """A switchover (SENTINEL FAILOVER): the old master lives on as a replica and refuses writes
    (READONLY); the store's next writes go to the new master without anyone telling it."""
    sentinel_set.wait_whole()
    old = sentinel_set.master()
    assert old is not None
    async with store_of(sentinel_set) as store:
        writer = Writer(AmlSink(store, prom.Counter("d", "", ["outbox"], registry=prom.CollectorRegistry())))
        await writer.send(NUMBERS[0])
        assert store.status()["master"] == f"127.0.0.1:{sentinel_set.nodes[old].port}"
        with next(iter(sentinel_set.sentinels.values())).client() as sentinel:
            await asyncio.to_thread(sentinel.sentinel_failover, sentinel_set.master_name)
        new = await asyncio.to_thread(sentinel_set.wait_for_master, old)
        await asyncio.to_thread(wait_until, lambda: sentinel_set.nodes[old].role() == "slave", 30, "old master demoted")
        async with asyncio.timeout(20):
            while len(writer.accepted) < 2:  # the first writes after the switch may fail (503), never be lost
                await writer.send(NUMBERS[1])
        assert store.status()["master"] == f"127.0.0.1:{sentinel_set.nodes[new].port}"
        assert store.status()["failovers"] == 1
        with sentinel_set.nodes[new].client() as master:
            trail = await asyncio.to_thread(master.lrange, f"v112:aml:{NUMBERS[1]}", 0, -1)
        assert any(f'"time":{writer.accepted[1][2]}'.encode() in fix for fix in trail)


async def status_of(verbund: lab.Verbund, site: str) -> dict[str, Any]:
    url = f"http://127.0.0.1:{verbund.ports[site].web}/api/v1/status"
    headers = {"Authorization": f"Bearer {verbund.read_token}"}
    async with aiohttp.ClientSession(timeout=TIMEOUT) as client, client.get(url, headers=headers) as response:
        return dict((await response.json())["redis"])


async def test_a_service_follows_the_failover_and_the_next_calls_card_comes_with_the_stores_data(
    verbund: lab.Verbund, start_service, start_desks
) -> None:
    jena = await start_service("jena")
    await start_desks("jena", ["jena-d1"])
    old = verbund.redis.master()
    assert old is not None
    try:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as client:
            screen = await connect_screen(client, verbund, "jena", "jena-d1")
            await next_message(screen, "hello")
            await asyncio.to_thread(verbund.redis.kill, old)
            new = await asyncio.to_thread(verbund.redis.wait_for_master, old)
            # the fix goes to the new master (no replica yet: the service keeps it until one acknowledges)
            await post_aml(verbund, "jena", "+4915112361001", 50.9279, 11.5891)
            call = asyncio.create_task(place_call(verbund, "jena", "+4915112361001", talk_ms=3000))
            card = await next_message(screen, "card", within=40)
            assert card["caller"] == "+4915112361001"
            assert [loc["source"] for loc in card["locations"]] == ["aml"]  # from the new master
            assert await call == 0
        status = await status_of(verbund, "jena")
        assert status["master"] == f"127.0.0.1:{verbund.redis.nodes[new].port}"
        assert status["failovers"] == 1 and status["degraded"] is False and status["mode"] == "sentinel"
        assert jena.registry.get_sample_value("verbund112_redis_failovers_total") == 1
    finally:
        await asyncio.to_thread(verbund.redis.restart, old)  # the lab whole again for the next tests
    async with asyncio.timeout(15):
        while jena.aml_sink.outbox.unconfirmed:  # noqa: ASYNC110 (no event for a replica's ack)
            await asyncio.sleep(0.1)


async def aml_answer(verbund: lab.Verbund, number: str) -> int:
    """One AML delivery to Jena's intake (as a handset's gateway sends it); the HTTP status."""
    now_ms = str(int(time.time() * 1000))
    form = {"location_latitude": "50.9279", "location_longitude": "11.5891", "location_accuracy": "12",
            "location_source": "gps", "time": now_ms, "location_time": now_ms, "device_number": number}  # fmt: skip
    url = f"http://127.0.0.1:{verbund.ports['jena'].web}/aml/v1/https"
    headers = {"Authorization": f"Bearer {verbund.aml_token}"}
    async with aiohttp.ClientSession(timeout=TIMEOUT) as client, client.post(url, data=form, headers=headers) as r:
        return r.status


async def test_the_card_of_a_held_call_gets_the_fix_sent_while_the_master_was_dying(
    verbund: lab.Verbund, start_service, start_desks
) -> None:
    await start_service("jena")
    await start_desks("jena", ["jena-d1"])
    old = verbund.redis.master()
    assert old is not None
    try:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as client:
            screen = await connect_screen(client, verbund, "jena", "jena-d1")
            await next_message(screen, "hello")
            call = asyncio.create_task(place_call(verbund, "jena", "+4915112361003", talk_ms=20000))
            await next_message(screen, "card", within=40)
            await asyncio.to_thread(verbund.redis.kill, old)
            killed = time.monotonic()
            answers = [await aml_answer(verbund, "+4915112361003")]
            while answers[-1] == 503:  # the sender retries, as told
                await asyncio.sleep(0.2)
                answers.append(await aml_answer(verbund, "+4915112361003"))
            accepted = time.monotonic()
            location = await next_message(screen, "location", within=20)
            shown = time.monotonic()
            assert location["location"]["source"] == "aml"
            assert answers[-1] == 202 and set(answers[:-1]) <= {503}
            print(
                f"\nREDIS FAILOVER under a held call: {len(answers) - 1} AML deliveries answered 503 (retried); "
                f"pop gap (master killed -> location on the card) {shown - killed:.2f} s, "
                f"(fix accepted -> on the card) {shown - accepted:.2f} s"
            )
            assert await call == 0
    finally:
        await asyncio.to_thread(verbund.redis.restart, old)


@contextlib.contextmanager
def redis_paused(verbund: lab.Verbund) -> Iterator[None]:
    """Both Redis nodes stop answering (SIGSTOP): no master anywhere, and none can be promoted."""
    nodes = list(verbund.redis.nodes.values())
    for node in nodes:
        os.kill(node.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for node in nodes:
            os.kill(node.pid, signal.SIGCONT)
        verbund.redis.wait_whole()


async def test_with_no_redis_master_calls_are_routed_and_the_service_says_it_is_degraded(
    verbund: lab.Verbund, start_service, start_desks
) -> None:
    jena = await start_service("jena")
    await start_desks("jena", ["jena-d1"])
    with redis_paused(verbund):
        async with asyncio.timeout(10):
            while jena.store.reachable:  # noqa: ASYNC110 (the heartbeat finds out within its timeout)
                await asyncio.sleep(0.05)
        with jena.hub.subscribe() as events:
            call = place_call(verbund, "jena", "+4915112361002", talk_ms=300, position=(50.9279, 11.5891, 25))
            assert await call == 0
            routed = await next_event(events, CallRouted)
            await next_event(events, DispatcherAnswered, lambda e: e.call_id == routed.call_id)
        used = routed.decision.location
        assert used is not None and used.source == "pidf" and used.district == "Jena"
        status = await status_of(verbund, "jena")
        assert status["degraded"] is True and status["reachable"] is False
        assert jena.registry.get_sample_value("verbund112_redis_up") == 0
        assert (jena.registry.get_sample_value("verbund112_redis_degraded_seconds_total") or 0) > 0
    async with asyncio.timeout(20):
        while not jena.store.reachable:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    assert (await status_of(verbund, "jena"))["degraded"] is False
