"""Asterisk's own logs keep no caller position and the caller number only where the docs allow it.

docs/security.md ("Asterisk's own logs"): positions are in no log file; caller numbers only in
queue_log (the queue statistics). Every file Asterisk writes under a site's log folder is read,
and so is the console output the lab captures.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from lab import lab
from lab.processes import AsteriskSite, wait_until
from telephony.events import DispatcherAnswered
from tests.conftest import next_event, place_call
from verbund112.features.hub import CallRouted

pytestmark = pytest.mark.lab

# a Greiz position delivered to Jena: routed to Gera, so both sites see the number and the position
POSITION = (50.654719, 12.199731, 30)
POSITION_TEXT = ("50.654719", "12.199731", "50.6547", "12.1997")
MOBILE = "+4915199887766"
FIXED_LINE = "+4936417766554"  # Jena: answered in Jena
# the significant digits, so that national and international forms are found alike
NUMBER_TEXT = {MOBILE: "15199887766", FIXED_LINE: "36417766554"}
# the only files that may hold a caller number (docs/security.md, docs/configuration.md)
NUMBERS_ALLOWED = {"queue_log"}


def log_files(site: AsteriskSite) -> dict[Path, str]:
    """Every file under the site's log folder (rotated ones too), and the captured console."""
    files = [path for path in (site.host_dir / "log").rglob("*") if path.is_file()]
    console = site.host_dir / "console.log"
    if console.is_file():
        files.append(console)
    return {path: path.read_text(errors="replace") for path in files}


def active_channels(site: AsteriskSite) -> int:
    shown = site.cli("core show channels count")
    for line in shown.splitlines():
        if line.endswith("active channels"):
            return int(line.split()[0])
    return -1


async def test_no_position_and_numbers_only_in_queue_log_after_a_pidf_lo_and_a_normal_call(
    verbund: lab.Verbund, start_service, start_desks
) -> None:
    jena = await start_service("jena")
    gera = await start_service("gera")
    async with asyncio.timeout(10):
        await jena.partner.reporting.wait()
        await gera.partner.reporting.wait()
    await start_desks("jena", ["jena-d1"])
    await start_desks("gera", ["gera-d1"])
    routed: list[CallRouted] = []
    with jena.hub.subscribe() as jena_events, gera.hub.subscribe() as gera_events:
        assert await place_call(verbund, "jena", MOBILE, talk_ms=300, position=POSITION) == 0
        routed.append(await next_event(jena_events, CallRouted))
        await next_event(gera_events, DispatcherAnswered, lambda e: e.call_id == routed[0].call_id)
        assert await place_call(verbund, "jena", FIXED_LINE, talk_ms=300) == 0
        routed.append(await next_event(jena_events, CallRouted))
        await next_event(jena_events, DispatcherAnswered, lambda e: e.call_id == routed[1].call_id)
    assert routed[0].position is not None  # the position did reach Asterisk and the service
    sites = [verbund.site("jena"), verbund.site("gera")]
    for site in sites:  # the calls are over at both sites: every line about them is written
        await asyncio.to_thread(wait_until, lambda site=site: active_channels(site) == 0, 20, "calls ended")

    found: list[str] = []
    written: dict[str, str] = {}
    for site in sites:
        for path, text in log_files(site).items():
            name = f"{site.values.name}:{path.relative_to(site.host_dir)}"
            written[name] = text
            for line in text.splitlines():
                if any(value in line for value in POSITION_TEXT):
                    found.append(f"{name}: position: {line}")
                elif path.name not in NUMBERS_ALLOWED and any(digits in line for digits in NUMBER_TEXT.values()):
                    found.append(f"{name}: number: {line}")
    assert found == [], "\n".join(found)
    # the logs were written and read: both calls are in them (by call id), and the queue
    # statistics of both sites have the numbers the docs allow there
    messages = written["jena:log/messages.log"]
    assert all(call.call_id in messages for call in routed), messages[-3000:]
    assert NUMBER_TEXT[FIXED_LINE] in written["jena:log/queue_log"]
    assert NUMBER_TEXT[MOBILE] in written["gera:log/queue_log"]
