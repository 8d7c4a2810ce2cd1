"""No caller position and no caller number in the service's log above DEBUG, whatever comes in.

Bad and 3-D PIDF-LO through FastAGI, bad AML through the HTTPS and SMS intake, and a central
server's answer with a bad entry through the AML pull: every refusal is logged with its reason,
and no record at INFO or above carries a coordinate, an altitude, a cell id or a number. At
DEBUG the values may appear (and do: so the data really went through the code under test).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from zoneinfo import ZoneInfo

import aiohttp
import prometheus_client as prom
import pytest

from aml.pull import AmlPullSettings, PullAnswer, parse_answer
from tests.support.aml_server import fix
from tests.unit.test_fastagi import asterisk_side, service_settings
from verbund112.features.aml_polls import AmlPolls, PullMetrics
from verbund112.service import Service, running

AML_TOKEN = "t-aml-gateway-0123456789"
NUMBER = "+4915112345678"
# every value below is personal data: none of these may be in a record at INFO or above
SECRETS_OF_THE_CALLER = (
    "50.9272", "11.5864", "231.5",  # a 3-D position
    "50.9273", "11.5865",  # a 3-D position without its altitude
    "50.9274",  # beside an impossible longitude
    "2620100A1B2C", "2620100a1b2c",  # a cell id
    "15112345678", "151 123", "15199999999",  # caller numbers, good and garbled
    "91.12345", "50.9275", "11.5866",  # AML coordinates, out of range and garbled
    "95.4321",  # a central server's impossible latitude
)  # fmt: skip


def leaks(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Records at INFO or above that carry personal data (message, arguments, traceback)."""
    found = []
    for record in caplog.records:
        if record.levelno < logging.INFO:
            continue
        text = record.getMessage() + (record.exc_text or "")
        found += [f"{record.levelname} {text!r}" for value in SECRETS_OF_THE_CALLER if value in text]
    return found


def seen_at_debug(caplog: pytest.LogCaptureFixture, value: str) -> bool:
    return any(value in record.getMessage() for record in caplog.records if record.levelno == logging.DEBUG)


@pytest.fixture
async def service() -> AsyncIterator[Service]:
    web = {"port": 0, "tokens": {AML_TOKEN: {"role": "aml", "name": "aml-gateway"}}}
    async with running(service_settings(web=web)) as started:
        yield started


def call(location_info: str, caller: str = NUMBER, pani: str = "") -> dict[str, str]:
    return {
        "V112_CALL_ID": "jena-1.1", "V112_CALLER": caller, "V112_GEO_HEADER_LEN": "40",
        "V112_GEO_METHOD": "GPS", "V112_GEO_LOCATION": location_info, "V112_PANI": pani,
    }  # fmt: skip


FASTAGI_CALLS = [
    call('shape="Sphere",crs="3d",pos="50.9272 11.5864 231.5",radius="20"'),  # good: routed by lat/lon
    call('shape="Point",crs="3d",pos="50.9273 11.5865"'),  # 3-D without its altitude
    call('shape="Circle",crs="2d",pos="50.9274 999",radius="5"'),  # outside WGS84
    call('shape="Point",crs="2d",pos="50.9272 11.5864 231.5 7 1"'),  # 5 numbers for 2-D
    call('shape="Point",crs="2d",pos="50.9272 11.5864"', pani="3GPP-E-UTRAN-FDD; utran-cell-id-3gpp=ZZ2620100A1B2C"),
    call('shape="Point",crs="2d",pos="x"', caller="+49 151 123 abc"),
]


async def test_fastagi_locations_good_bad_and_3d_leave_no_trace_above_debug(
    service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for variables in FASTAGI_CALLS:
        answer = await asyncio.wait_for(asterisk_side(service.fastagi.port, variables=variables), 5)
        assert answer["V112_ROUTE"] == "local"
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sum("PIDF-LO location of the call ignored" in text for text in warned) == 4  # each says why
    assert any("P-Access-Network-Info of the call ignored" in text for text in warned)
    assert seen_at_debug(caplog, "50.92720")  # the 3-D position went through, logged at DEBUG only
    assert leaks(caplog) == []


async def test_bad_aml_at_the_intake_leaves_no_trace_above_debug(
    service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    base = f"http://127.0.0.1:{service.web_port}/aml/v1"
    headers = {"Authorization": f"Bearer {AML_TOKEN}"}
    https = {"location_longitude": "11.5864", "location_accuracy": "9", "location_source": "gps",
             "time": "1740830400000", "device_number": NUMBER}  # fmt: skip
    sms = 'A"ML=2;et=1740830400;lo=50.9275,11.5866,5,9;lt=3;lc=68;ls=G;en=112;lz=231.5,3.0'  # lo with 4 parts
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as client:
        for form in (https | {"location_latitude": "91.12345"}, https | {"location_latitude": "50.9275x"},
                     https | {"location_latitude": "50.9272", "device_number": "+49 151 123 abc"}):  # fmt: skip
            async with client.post(f"{base}/https", data=form, headers=headers) as response:
                assert (await response.json())["stored"] is False, await response.text()
        async with client.post(f"{base}/sms", data={"from": NUMBER, "text": sms}, headers=headers) as response:
            assert "refused" in await response.json(), await response.text()
    refused = [r.getMessage() for r in caplog.records if "AML" in r.getMessage() and r.levelno == logging.WARNING]
    assert len(refused) == 4  # each refusal logged with its reason
    assert leaks(caplog) == []


async def test_a_bad_entry_of_the_central_servers_answer_leaves_no_trace_above_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    now = time.time()  # a fix of this call, so that the poll ends with it
    body = json.dumps([fix(95.4321, 11.5864), fix(50.9272, 11.5864, time_ms=int(now * 1000))]).encode()
    answered = asyncio.Event()

    async def fetch(number: str) -> PullAnswer:
        answered.set()
        return parse_answer(body, number, ZoneInfo("Europe/Berlin"), now)

    async def latest(number: str) -> None:
        return None

    async def store(number: str, message: object) -> None:
        pass

    settings = AmlPullSettings(backoff_first=1.0, backoff_factor=2.0, backoff_max=4.0)
    polls = AmlPolls(settings, PullMetrics(prom.CollectorRegistry()), latest=latest, store=store,
                     sleep=lambda _: asyncio.sleep(0))  # fmt: skip
    async with polls.polling(fetch):
        polls.call_started("u1", "jena-1", "0151 12345678")
        assert await asyncio.wait_for(polls.finished("u1"), 5) == "fix"
    assert answered.is_set()
    assert any("an entry of the server's answer skipped" in r.getMessage() for r in caplog.records)
    assert leaks(caplog) == []
