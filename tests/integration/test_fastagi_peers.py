"""Only the site's Asterisk may ask the FastAGI server, and no request overwrites a call's record.

A forged client (tests/support/agi_client.py plays Asterisk) tries it from another loopback
address and from Asterisk's own address without the dialplan's secret, while a real 112 call
goes through the lab: both are refused and counted, nothing is written for them, the real call
is routed and answered, and its record holds the real number. A request with the secret for a
call id that has a record (as if Asterisk asked twice) leaves the record as it was.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from lab import lab
from routing.numbers import to_e164
from telephony import dialplan
from tests.conftest import next_event, place_call
from tests.support import agi_client
from verbund112.features.hub import CallRouted
from verbund112.service import Service
from verbund112.store.records import CallRecord

pytestmark = pytest.mark.lab

REAL_NUMBER = "036411234567"  # a Jena landline: routed locally, answered by jena-d1
FORGED_NUMBER = "+4915199999999"
STRANGER = "127.0.0.9"  # another loopback address than the lab Asterisk's 127.0.0.1


async def eventually(check, what: str, within: float = 10.0):  # type: ignore[no-untyped-def]
    """The first truthy result of the async check, polled until the deadline."""
    deadline = time.monotonic() + within
    while not (result := await check()):
        assert time.monotonic() < deadline, f"{what}: not within {within} s"
        await asyncio.sleep(0.05)
    return result


async def record_of(service: Service, call_id: str) -> CallRecord:
    """The call's record once the call-record outbox has written it."""
    return await eventually(lambda: service.store.load_call(call_id), f"record of {call_id}")


def refused(service: Service, reason: str) -> float:
    return service.registry.get_sample_value("verbund112_fastagi_refused_total", {"reason": reason}) or 0.0


async def forge(service: Service, call_id: str, *, source: str | None = None, secret: str | None = None) -> dict:
    """One whole FastAGI exchange for call_id with a forged caller; returns what the server set."""
    variables = {"V112_CALL_ID": call_id, "V112_CALLER": FORGED_NUMBER}
    if secret is not None:
        variables[dialplan.FASTAGI_SECRET] = secret
    request = agi_client.request_text(uniqueid=call_id, caller=FORGED_NUMBER)
    async with asyncio.timeout(5):
        return await agi_client.exchange(service.fastagi.port, variables, request, source=source)


async def test_only_our_asterisk_may_ask_and_a_record_is_never_overwritten(
    verbund: lab.Verbund, start_service, start_desks
) -> None:
    jena = await start_service("jena")
    await start_desks("jena", ["jena-d1"])
    secret = verbund.site("jena").secrets.fastagi_secret
    with jena.hub.subscribe() as events:
        call = asyncio.create_task(place_call(verbund, "jena", REAL_NUMBER, talk_ms=3000))
        routed = await next_event(events, CallRouted)
        real_call_id = routed.call_id
        record = await record_of(jena, real_call_id)
        # while the real call is up: a stranger (with the secret, even), and our address without it
        for call_id in (real_call_id, "jena-1700000000.999"):
            assert await forge(jena, call_id, source=STRANGER, secret=secret) == {}
            assert await forge(jena, call_id) == {}
            assert await forge(jena, call_id, secret="not-the-dialplans-secret") == {}
        # Asterisk (the secret, its address) asking again for a call that has a record
        again = await forge(jena, real_call_id, secret=secret)
        assert again["V112_ROUTE"] == "local"
        assert await call == 0  # the real caller was answered all the same

    assert (refused(jena, "peer"), refused(jena, "secret")) == (2.0, 4.0)
    assert await jena.store.load_call("jena-1700000000.999") is None  # nothing written for the refused
    assert record.caller == to_e164(REAL_NUMBER)

    async def second_write_refused() -> bool:
        return jena.store.call_records_kept._value.get() == 1

    await eventually(second_write_refused, "the second request's record refused by the store")
    assert await jena.store.load_call(real_call_id) == record  # the second request changed nothing
    _, earlier = await jena.store.aml_and_earlier(FORGED_NUMBER, time.time() - 600, 11)
    assert earlier == []  # the forged number was never indexed
    # the secret is nowhere in Asterisk's own log (it is not in the AGI URL)
    assert secret not in verbund.site("jena").log_file.read_text(errors="replace")
