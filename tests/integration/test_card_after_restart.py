"""A restarted service gives the dispatchers the cards of the calls they hold (issue 11).

Through the real lab: Jena's service routes a call and stops; a dispatcher
answers it while no service runs; the service starts again and that
dispatcher's screen gets the call's card, with the record the store kept from
the call's entry. A call answered and ended while the service was down is not
put on the callback list.
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from lab import lab
from lab.processes import wait_until
from telephony import dialplan
from tests.conftest import next_event, place_call, settings_for
from tests.integration.test_screen_pops import TIMEOUT, connect_screen, next_message
from verbund112.features.hub import CallRouted
from verbund112.service import running

pytestmark = pytest.mark.lab

HELD = "+4915112348101"  # answered while the service is down, still talking when it is back
ENDED = "+4915112348102"  # answered and ended while the service is down


async def test_a_call_answered_while_the_service_was_down_gets_its_card_after_the_restart(
    verbund: lab.Verbund, start_service, start_desks
) -> None:
    jena = verbund.site("jena")
    async with running(settings_for(verbund, "jena")) as before:
        with before.hub.subscribe() as seen:
            call = asyncio.create_task(asyncio.to_thread(_held_call, verbund))
            routed = await next_event(seen, CallRouted, lambda e: e.caller_number == HELD)
        for _ in range(100):  # the entry's record is in the store before the service stops (10 s at most)
            if await before.store.load_call(routed.call_id) is not None:
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail("the call's record never reached the store")
    # the service is down (its record of the call is in the store); no desk was free, the caller goes round
    desks = await start_desks("jena", ["jena-d1"])
    await asyncio.to_thread(desks.wait_for, lambda e: e.get("event") == "answered" and e["seat"] == "jena-d1", 30)
    await start_desks("jena", ["jena-d2"])
    assert await place_call(verbund, "jena", ENDED, talk_ms=500) == 0

    after = await start_service("jena")
    async with aiohttp.ClientSession(timeout=TIMEOUT) as client:
        screen = await connect_screen(client, verbund, "jena", "jena-d1")
        card = await next_message(screen, "card")
        assert card["call_id"] == routed.call_id
        assert card["dispatcher"] == "jena-d1"
        assert card["caller"] == HELD
        assert card["locations"][0]["source"] == "pidf"  # the record the store kept from the call's entry
        # read on (the page answers the server's pings only while it reads) until the caller hangs up
        ended = await next_message(screen, "call-ended", within=40)
        assert ended["call_id"] == routed.call_id
    assert await call == 0

    # the call answered and ended meanwhile: not in the dialplan's outbox, not on the callback list
    def outbox_read() -> bool:
        reads = after.registry.get_sample_value("verbund112_abandoned_outbox_reads_total", {"outcome": "read"})
        return (reads or 0) > 0

    await asyncio.to_thread(wait_until, outbox_read, 10, "AstDB outbox read")
    assert ENDED.lstrip("+") not in jena.cli(f"database show {dialplan.ABANDONED_FAMILY}")
    listed = {entry.caller for entry in await after.store.abandoned_calls()}
    assert not {HELD, ENDED} & listed
    read = after.registry.get_sample_value("verbund112_answered_calls_read_total")
    print(f"calls held by dispatchers, read after the restart: {read}")


def _held_call(verbund: lab.Verbund) -> int:
    port = verbund.site("jena").values.sip_port
    process = lab.sipp_call(port, HELD, talk_ms=25000, position=(50.9279, 11.5891, 25))
    _, errors = process.communicate(None, 150)
    if process.returncode != 0:
        print(f"sipp exit {process.returncode}: {errors.decode(errors='replace')[-3000:]}")
    return process.returncode
