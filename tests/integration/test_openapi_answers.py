"""A live site answers as web/openapi.yaml says: its status and supervisor view with both sites up, the rules
audit, the callback list, the AML intake, and a dispatcher's screen through a real 112 call (card, location
update, call ended). tests/unit/test_openapi.py sees the same routes with AMI and Redis down."""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest

from lab import lab
from tests.conftest import place_call
from tests.support.openapi import Answers, Messages

pytestmark = pytest.mark.lab
TIMEOUT = aiohttp.ClientTimeout(total=30)
FORM = "application/x-www-form-urlencoded"
CALLER = "+4915112349071"


def aml_fix(lat: float, lon: float) -> bytes:
    now_ms = str(int(time.time() * 1000))
    return urlencode({"location_latitude": lat, "location_longitude": lon, "location_accuracy": 15,
                      "location_source": "gps", "time": now_ms, "location_time": now_ms,
                      "device_number": CALLER}).encode()  # fmt: skip


async def until(screen: aiohttp.ClientWebSocketResponse, kind: str, seen: list[dict[str, Any]]) -> dict[str, Any]:
    """The next message of a kind; every message on the way is kept in `seen`."""
    async with asyncio.timeout(60):
        while True:
            message = await screen.receive_json()
            seen.append(message)
            if message.get("type") == kind:
                return message


async def test_a_live_sites_answers_and_screen_pops_match_the_description(
    verbund: lab.Verbund, start_service, start_desks
) -> None:
    await start_service("jena")
    await start_service("gera")
    await start_desks("jena", ["jena-d1"])
    base = f"http://127.0.0.1:{verbund.ports['jena'].web}"
    read, admin = {"Authorization": f"Bearer {verbund.read_token}"}, {"Authorization": f"Bearer {verbund.web_token}"}
    aml, desk = (
        {"Authorization": f"Bearer {verbund.aml_token}"},
        {"Authorization": f"Bearer {verbund.desk_tokens['jena-d1']}"},
    )
    messages, seen = Messages(), []
    async with aiohttp.ClientSession(timeout=TIMEOUT) as client:
        answers = Answers(client, base)
        async with client.ws_connect(f"{base}/ws/v1/dispatchers/jena-d1", headers=desk) as screen:
            await until(screen, "hello", seen)
            assert await answers.check("POST", "/aml/v1/https", aml, body=aml_fix(50.9279, 11.5891),
                                       content_type=FORM) == (202, {"stored": True})  # fmt: skip
            call = asyncio.create_task(
                place_call(verbund, "jena", CALLER, talk_ms=4000, position=(50.9279, 11.5891, 25))
            )
            card = await until(screen, "card", seen)
            assert [location["source"] for location in card["locations"]] == ["aml", "pidf"]
            await answers.check("POST", "/aml/v1/https", aml, body=aml_fix(50.93, 11.59), content_type=FORM)
            await until(screen, "location", seen)
            await until(screen, "call-ended", seen)
            await asyncio.wait_for(call, 60)
        assert {"hello", "card", "location", "call-ended"} <= {message["type"] for message in seen}
        for message in seen:
            assert messages.screen_problems(message) == [], message

        status, body = await answers.check("GET", "/api/v1/status", read)
        assert status == 200
        assert (body["ami"]["connected"], body["redis"]["reachable"]) == (True, True)
        assert isinstance(body["redis"]["master"], str)
        status, body = await answers.check("GET", "/api/v1/supervisor", read)
        assert status == 200
        assert body["sites"]["jena"]["state"] == "live"
        assert (await answers.check("GET", "/readyz", {}))[0] == 200
        assert (await answers.check("POST", "/api/v1/rules/reload", admin))[0] == 200
        status, body = await answers.check("GET", "/api/v1/rules/audit", read)
        assert status == 200
        assert body["entries"]
        assert (await answers.check("GET", "/api/v1/abandoned", desk))[0] == 200
        assert (await answers.check("POST", "/api/v1/abandoned/no-such-call/callback-done", desk))[0] == 404
        assert (await answers.check("GET", "/api/v1/status", aml))[0] == 403
