"""What the dispatcher's desk phone shows of the caller, through the real lab."""

from __future__ import annotations

import asyncio

import pytest

from lab import lab
from tests.conftest import place_call

pytestmark = pytest.mark.lab


async def test_a_caller_with_clir_shows_their_number_on_the_dispatchers_phone(
    verbund: lab.Verbund, start_desks
) -> None:
    """CLIR hides a number from other subscribers, never from the emergency service."""
    desks = await start_desks("jena", ["jena-d1"])  # the desk path is Asterisk's alone: no service needed
    assert await place_call(verbund, "jena", "+4936417654321", talk_ms=500, clir=True) == 0
    desk = await asyncio.to_thread(desks.wait_for, lambda e: e.get("event") == "answered", 5)
    # From stays "Anonymous" (RFC 3325); the number comes in P-Asserted-Identity, which desk phones show
    assert (desk["seat"], desk["asserted"]) == ("jena-d1", "+4936417654321")
    assert desk["privacy"] == "id"  # the phone knows the number is withheld from everyone else
