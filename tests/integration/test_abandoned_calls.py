"""Every unanswered 112 caller reaches the callback list, exactly once, whatever the service went through.

The dialplan's hangup handler reports each call's end (V112CallEnded over AMI)
and keeps each unanswered one in AstDB; the service lists it through an outbox
that retries while Redis does not answer, and collects AstDB after every AMI
connect. Checked against the real lab: with the kill switch on (the service is
never asked), with the service stopped during the call, with Redis (both nodes) paused at
the hangup; answered calls (here and at the partner) are never listed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Callable

import prometheus_client as prom
import pytest

from lab import lab
from telephony import events
from tests.conftest import next_event, place_call, settings_for
from verbund112.service import Service, running
from verbund112.store import RedisSettings, Store
from verbund112.store.records import AbandonedCall

pytestmark = pytest.mark.lab


@pytest.fixture
async def store(verbund: lab.Verbund) -> AsyncIterator[Store]:
    """The Verbund's store as the dispatchers' callback list reads it."""
    reader = Store(RedisSettings(**verbund.redis_settings(), timeout=2.0), prom.CollectorRegistry())
    yield reader
    await reader.close()


async def callback_list_of(store: Store, number: str) -> list[AbandonedCall]:
    return [call for call in await store.abandoned_calls() if call.caller == number]


async def listed_once(store: Store, number: str, within: float = 20.0) -> AbandonedCall:
    """Wait until the number is on the callback list; it must be there exactly once."""
    deadline = time.monotonic() + within
    while not (found := await callback_list_of(store, number)):
        assert time.monotonic() < deadline, f"{number} not on the callback list within {within} s"
        await asyncio.sleep(0.2)
    assert len(found) == 1, found
    return found[0]


async def eventually(check: Callable[[], bool], what: str, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"not {what} within {within} s"
        await asyncio.sleep(0.1)


def outcomes(service: Service, outcome: str) -> float:
    return service.abandoned.outcomes.labels(outcome)._value.get()


def astdb(verbund: lab.Verbund, site: str) -> str:
    return verbund.site(site).cli("database show v112-abandoned")


@contextlib.asynccontextmanager
async def service_of(verbund: lab.Verbund, site: str) -> AsyncIterator[Service]:
    async with running(settings_for(verbund, site)) as service:
        async with asyncio.timeout(10):
            await service.ami.connected.wait()
        yield service


async def test_abandoned_with_the_kill_switch_on_is_listed_once(verbund: lab.Verbund, store: Store) -> None:
    jena = verbund.site("jena")
    # an outbox hour far older than the retention: the next call's hangup handler deletes it
    jena.cli("database put v112-abandoned/2000010100 jena-946684800.1 +4936410000000|jena|946684800|946684801")
    jena.cli("dialplan set global V112_ASK_SERVICE 0")
    try:
        async with service_of(verbund, "jena") as service:
            with service.hub.subscribe() as seen:
                assert await place_call(verbund, "jena", "+4915112347001", hang_up_after_ms=2500) == 0
                ended = await next_event(seen, events.CallEnded, lambda e: e.caller_number == "+4915112347001")
            assert not ended.answered
            assert service.fastagi.stats.requests == 0  # the service was never asked
            entry = await listed_once(store, "+4915112347001")
            assert (entry.call_id, entry.site) == (ended.call_id, "jena")
            assert entry.waited_s >= 2
            assert ended.call_id in astdb(verbund, "jena")  # kept for a service that missed the event
            assert "2000010100" not in astdb(verbund, "jena")
    finally:
        jena.cli("dialplan set global V112_ASK_SERVICE 1")
    # a restarted service collects the AstDB outbox again: still listed once
    async with service_of(verbund, "jena") as again:
        await eventually(lambda: outcomes(again, "seen") >= 1, "collected from AstDB")
        assert outcomes(again, "added") == 0
    await listed_once(store, "+4915112347001")


async def test_abandoned_while_the_service_is_stopped_is_listed_once_after_it_starts(
    verbund: lab.Verbund, store: Store
) -> None:
    async with service_of(verbund, "jena") as service:
        with service.hub.subscribe() as seen:
            call = asyncio.create_task(place_call(verbund, "jena", "+4915112347002", hang_up_after_ms=6000))
            await next_event(seen, events.CallerWentRound)  # the call is in the loop, nobody answers
    # the service is stopped; the caller hangs up meanwhile
    assert await call == 0
    assert await callback_list_of(store, "+4915112347002") == []
    async with service_of(verbund, "jena") as restarted:
        entry = await listed_once(store, "+4915112347002")
        assert entry.site == "jena" and entry.waited_s >= 5
        assert outcomes(restarted, "added") == 1


async def test_abandoned_while_redis_is_paused_is_listed_once_after_it_answers(
    verbund: lab.Verbund, store: Store
) -> None:
    async with service_of(verbund, "jena") as service:
        with service.hub.subscribe() as seen:
            call = asyncio.create_task(place_call(verbund, "jena", "+4915112347003", hang_up_after_ms=4000))
            await next_event(seen, events.CallerWentRound)
            paused = [node.pid for node in verbund.redis.nodes.values()]  # no master, none to promote
            for pid in paused:
                os.kill(pid, signal.SIGSTOP)
            try:
                ended = await next_event(seen, events.CallEnded, lambda e: e.caller_number == "+4915112347003")
                assert not ended.answered
                assert await call == 0
                # the store write waits in the outbox while Redis does not answer
                await eventually(lambda: not service.store.reachable, "Redis seen as unreachable")
                assert outcomes(service, "added") == 0
            finally:
                for pid in paused:
                    os.kill(pid, signal.SIGCONT)
                await asyncio.to_thread(verbund.redis.wait_whole)
        entry = await listed_once(store, "+4915112347003")
        assert entry.call_id == ended.call_id
        assert outcomes(service, "added") == 1


async def test_a_call_answered_here_is_not_listed(
    verbund: lab.Verbund, start_service, start_desks, store: Store
) -> None:
    jena = await start_service("jena")
    await start_desks("jena", ["jena-d1"])
    with jena.hub.subscribe() as seen:
        assert await place_call(verbund, "jena", "+4915112347004", talk_ms=1500) == 0
        ended = await next_event(seen, events.CallEnded, lambda e: e.caller_number == "+4915112347004")
    assert ended.answered
    assert await callback_list_of(store, "+4915112347004") == []
    assert ended.call_id not in astdb(verbund, "jena")


async def test_a_call_answered_at_the_partner_is_not_listed(
    verbund: lab.Verbund, start_service, start_desks, store: Store
) -> None:
    jena = await start_service("jena")
    await start_service("gera")
    await start_desks("gera", ["gera-d1"])  # nobody at Jena: the call goes over the trunk
    with jena.hub.subscribe() as seen:
        assert await place_call(verbund, "jena", "+4915112347005", talk_ms=1500) == 0
        answered = await next_event(seen, events.CallAnswered)  # raised at Jena when Gera's desk answered
        ended = await next_event(seen, events.CallEnded, lambda e: e.caller_number == "+4915112347005")
    assert answered.call_id == ended.call_id
    assert ended.answered
    assert await callback_list_of(store, "+4915112347005") == []
    assert ended.call_id not in astdb(verbund, "jena")
