"""Callers going round between two centres where nobody answers: counted, shown, alarmed on.

With no dispatcher at either site the caller never sits in a queue for long
(joinempty), so the queue counts say nobody is waiting; the dialplan reports
every round and the service counts the caller until they hang up.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from lab import lab
from telephony import events
from tests.conftest import next_event, place_call

pytestmark = pytest.mark.lab
TIMEOUT = aiohttp.ClientTimeout(total=10)


async def get(verbund: lab.Verbund, site: str, path: str) -> aiohttp.ClientResponse:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as client:
        headers = {"Authorization": f"Bearer {verbund.read_token}"}
        async with client.get(f"http://127.0.0.1:{verbund.ports[site].web}{path}", headers=headers) as response:
            assert response.status == 200
            await response.read()
            return response


async def metric(verbund: lab.Verbund, site: str, name: str) -> float:
    response = await get(verbund, site, "/metrics")
    found = re.search(rf"^{name} (\S+)$", (await response.text()), re.M)
    assert found is not None, f"{name} not in the metrics"
    return float(found.group(1))


async def circling_of(verbund: lab.Verbund, seen_from: str, site: str) -> dict[str, Any]:
    view = await (await get(verbund, seen_from, "/api/v1/supervisor")).json()
    return dict(view["sites"][site], circling=view["sites"][site]["circling"])


async def eventually(check: Callable[[], Awaitable[bool]], what: str, within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, f"not {what} within {within} s"
        await asyncio.sleep(0.2)


async def test_a_caller_going_round_is_counted_shown_and_alarmed_until_they_hang_up(
    verbund: lab.Verbund, start_service
) -> None:
    jena = await start_service("jena", circling={"alarm_after_s": 3})
    await start_service("gera")
    with jena.hub.subscribe() as seen:
        call = asyncio.create_task(place_call(verbund, "jena", "+4915112348001", hang_up_after_ms=9000))
        first = await next_event(seen, events.CallerWentRound)
        assert first.round == 1

        async def counted() -> bool:
            return await metric(verbund, "jena", "verbund112_callers_circling") == 1

        await eventually(counted, "counted as going round")
        jena_view = await circling_of(verbund, "jena", "jena")
        assert jena_view["waiting"] == 0  # no queue shows the caller: that is why they are counted
        assert [c["call_id"] for c in jena_view["circling"]["callers"]] == [first.call_id]

        async def shown_at_gera() -> bool:  # in Jena's heartbeat snapshot, every 0.5 s
            return (await circling_of(verbund, "gera", "jena"))["circling"]["count"] == 1

        await eventually(shown_at_gera, "shown in the partner's supervisor view")

        async def alarmed() -> bool:
            return await metric(verbund, "jena", "verbund112_callers_circling_alarm") == 1

        await eventually(alarmed, "alarmed after 3 s")
        assert await metric(verbund, "jena", "verbund112_callers_circling_longest_seconds") > 3
        assert (await circling_of(verbund, "jena", "jena"))["circling"]["alarm"] is True

        assert await call == 0
        await next_event(seen, events.CallEnded, lambda e: e.call_id == first.call_id)
    assert await metric(verbund, "jena", "verbund112_callers_circling") == 0
    assert await metric(verbund, "jena", "verbund112_callers_circling_alarm") == 0
    assert (await circling_of(verbund, "jena", "jena"))["circling"]["count"] == 0


async def test_a_caller_answered_at_the_partner_after_going_round_is_no_longer_counted(
    verbund: lab.Verbund, start_service, start_desks
) -> None:
    jena = await start_service("jena")
    with jena.hub.subscribe() as seen:
        call = asyncio.create_task(place_call(verbund, "jena", "+4915112348002", talk_ms=3000))
        went_round = await next_event(seen, events.CallerWentRound)
        assert len(jena.circling.view().callers) == 1
        await start_desks("gera", ["gera-d1"])  # a dispatcher at Gera logs in and takes the caller
        answered = await next_event(seen, events.CallAnswered, within=40)
        assert answered.call_id == went_round.call_id
        assert jena.circling.view().callers == ()
        assert await call == 0
