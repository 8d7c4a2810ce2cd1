"""Forwarding to a Leitstelle outside the Verbund never costs a 112 caller their call."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from lab import lab
from routing.decision import Route
from telephony.events import DispatcherAnswered
from tests.conftest import next_event, place_call
from tests.integration.test_routing_calls import NAILA_HOF
from verbund112.features.hub import CallRouted

pytestmark = pytest.mark.lab


async def test_a_caller_whose_external_leg_answers_and_hangs_up_reaches_a_local_dispatcher(
    verbund: lab.Verbund, start_service, start_desks, tmp_path: Path
) -> None:
    gera = await start_service("gera")
    desks = await start_desks("gera", ["gera-d1"])
    neighbour = lab.neighbour_uas(
        verbund.site("gera"), verbund.ports["gera"].neighbour, tmp_path / "neighbour.log", hangs_up=True
    )
    try:
        with gera.hub.subscribe() as events:
            # the caller stays on the line well past the neighbour's 2 s, as a caller in need would
            call = asyncio.create_task(place_call(verbund, "gera", "+4915112345679", talk_ms=10000, position=NAILA_HOF))
            routed = await next_event(events, CallRouted)
            assert routed.decision.route is Route.EXTERNAL
            answered = await next_event(events, DispatcherAnswered, lambda e: e.call_id == routed.call_id)
            assert await call == 0  # the caller hung up themselves, after talking to the dispatcher
        _, errors = await asyncio.to_thread(neighbour.communicate, None, 30)
        assert neighbour.returncode == 0, errors  # it did answer and hang up
    finally:
        if neighbour.poll() is None:
            neighbour.kill()
            neighbour.communicate()
    assert (answered.site, answered.dispatcher, answered.caller_number) == ("gera", "gera-d1", "+4915112345679")
    desk = await asyncio.to_thread(desks.wait_for, lambda e: e.get("event") == "answered", 5)
    assert desk["seat"] == "gera-d1"
