"""Dispatcher desks: who may register (the SIP ACL, one device per seat), what security.log
shows of it, and a dead desk that costs seconds instead of every call's ring time."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from typing import Any

import pytest

from lab import lab
from lab.processes import AsteriskSite, LabError, wait_until
from telephony.events import DispatcherAnswered, DispatcherRinging, DispatcherStateChanged, MemberStatus
from tests.conftest import next_event, place_call

pytestmark = pytest.mark.lab

OUTSIDE = "127.0.0.8"  # loopback, outside the desk networks (127.0.0.1/32) and no trunk's address (.2-.5)
CALLER = "+4936411234567"


def log_lines(site: AsteriskSite, name: str, *needles: str) -> list[str]:
    path = site.host_dir / "log" / name
    text = path.read_text(errors="replace") if path.is_file() else ""
    return [line for line in text.splitlines() if all(needle in line for needle in needles)]


async def logged(site: AsteriskSite, name: str, *needles: str) -> str:
    """The first line of an Asterisk log with all needles, waiting for the logger to write it."""
    try:
        await asyncio.to_thread(wait_until, lambda: bool(log_lines(site, name, *needles)), 10, "log line")
    except LabError:
        raise AssertionError(f"{needles} not in {name}:\n" + "\n".join(log_lines(site, name)[-20:])) from None
    return log_lines(site, name, *needles)[0]


async def registration(desks: lab.Desks) -> dict[str, Any]:
    """registered or register_failed: how the desk's REGISTER ended."""
    outcome = ("registered", "register_failed")
    return await asyncio.to_thread(desks.wait_for, lambda e: e.get("event") in outcome, 20)


@contextlib.contextmanager
def desk_process(site: AsteriskSite, seats: list[str], **options: Any):  # type: ignore[no-untyped-def]
    desks = lab.Desks(site, seats, **options)
    try:
        yield desks
    finally:
        desks.stop()


async def test_a_desk_registering_from_outside_the_desk_networks_is_refused_and_in_the_security_log(
    verbund: lab.Verbund,
) -> None:
    site = verbund.site("jena")
    with desk_process(site, ["jena-d3"], address=OUTSIDE) as desks:  # the seat's real password
        assert (await registration(desks))["event"] == "register_failed"
        line = await logged(site, "security.log", 'SecurityEvent="FailedACL"', f"/{OUTSIDE}/")
        await logged(site, "messages.log", "NOTICE", f"'{OUTSIDE}:", "Not match Endpoint ACL")
    assert 'AccountID="jena-d3"' in line and 'ACLName="not_match_endpoint_acl"' in line
    assert not log_lines(site, "security.log", 'SecurityEvent="SuccessfulAuth"', f"/{OUTSIDE}/")


async def test_a_desk_with_a_wrong_password_is_refused_and_in_the_security_log(verbund: lab.Verbund) -> None:
    site = verbund.site("jena")
    with desk_process(site, ["jena-d4"], passwords={"jena-d4": "not-the-password"}) as desks:
        assert (await registration(desks))["event"] == "register_failed"
        line = await logged(site, "security.log", 'SecurityEvent="ChallengeResponseFailed"', 'AccountID="jena-d4"')
        await logged(site, "messages.log", "NOTICE", "jena-d4", "Failed to authenticate")
    assert "/127.0.0.1/" in line  # the desk's address: who tried


async def test_a_second_device_cannot_take_a_seat_that_has_a_live_desk(
    verbund: lab.Verbund, start_service, start_desks
) -> None:
    site = verbund.site("jena")
    await start_service("jena")
    desk = await start_desks("jena", ["jena-d1"])
    with desk_process(site, ["jena-d1"]) as second:  # same seat and password, another port
        assert (await registration(second))["event"] == "register_failed"
        await logged(site, "messages.log", "WARNING", "'jena-d1'", "will exceed max contacts")
        await logged(site, "security.log", 'AccountID="jena-d1"', "exceeds_maximum_configured_contacts")
        assert await place_call(verbund, "jena", CALLER, talk_ms=300) == 0
    answered = await asyncio.to_thread(desk.wait_for, lambda e: e.get("event") == "answered", 5)
    assert answered["seat"] == "jena-d1"
    assert not [e for e in second.drain() if e.get("event") == "answered"]


async def test_a_stopped_desk_becomes_unavailable_and_the_call_goes_to_a_live_desk_without_ringing_it(
    verbund: lab.Verbund, start_service, start_desks
) -> None:
    service = await start_service("jena")
    dead = await start_desks("jena", ["jena-d1"])
    live = await start_desks("jena", ["jena-d2"])
    qualify_s = verbund.site("jena").values.desk_qualify_s
    with service.hub.subscribe() as events:
        os.kill(dead.process.pid, signal.SIGSTOP)  # registered, but answers nothing any more
        try:
            await next_event(
                events, DispatcherStateChanged,
                lambda e: e.dispatcher == "jena-d1" and e.status is MemberStatus.UNAVAILABLE,
                within=3 * (qualify_s + 2),
            )  # fmt: skip
            # from here on the dead desk must not be rung: every event up to the answer is kept
            assert await place_call(verbund, "jena", CALLER, talk_ms=300) == 0
            until_answered = await events_until(events, DispatcherAnswered)
        finally:
            os.kill(dead.process.pid, signal.SIGCONT)  # so that it can unregister at the end
    answered = until_answered[-1]
    assert isinstance(answered, DispatcherAnswered) and answered.dispatcher == "jena-d2"
    rung = [e.dispatcher for e in until_answered if isinstance(e, DispatcherRinging)]
    assert "jena-d1" not in rung and "jena-d2" in rung
    desk_event = await asyncio.to_thread(live.wait_for, lambda e: e.get("event") == "answered", 5)
    assert desk_event["caller"] == CALLER


async def events_until(events: asyncio.Queue[Any], kind: type, within: float = 30.0) -> list[Any]:
    """Every event up to and including the first of a kind."""
    seen = []
    async with asyncio.timeout(within):
        while not isinstance(event := await events.get(), kind):
            seen.append(event)
    return [*seen, event]
