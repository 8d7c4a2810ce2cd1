"""AML intake against the real Redis of the lab, and AML used for routing a real call."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from urllib.parse import urlencode

import aiohttp
import pytest
import redis.asyncio as aioredis

from lab import lab
from routing.decision import Route
from telephony.events import DispatcherAnswered
from tests.conftest import next_event, place_call
from tests.support.aml_sender import signed_headers
from verbund112.features.hub import CallRouted
from verbund112.store import keys

pytestmark = pytest.mark.lab

SMS_V1 = (
    'A"ML=1;lt=+50.65470;lg=+12.19970;rd=25;top={top};lc=68;pm=G;si=262010000000000;ei=353472104343540;'
    "mcc=262;mnc=01;ml=128"
)
TIMEOUT = aiohttp.ClientTimeout(total=10)
SECRET = "gateway-shared-secret-0123"


def https_form(number: str, lat: float = 50.6547, lon: float = 12.1997) -> dict[str, str]:
    now_ms = str(int(time.time() * 1000))
    return {
        "v": "3", "emergency_number": "112", "source": "phone", "time": now_ms, "location_time": now_ms,
        "location_latitude": str(lat), "location_longitude": str(lon), "location_accuracy": "18",
        "location_confidence": "0.68", "location_source": "gps", "device_number": number,
    }  # fmt: skip


async def post(verbund: lab.Verbund, path: str, headers: dict[str, str], **kwargs) -> tuple[int, dict]:
    url = f"http://127.0.0.1:{verbund.ports['jena'].web}{path}"
    async with aiohttp.ClientSession(timeout=TIMEOUT) as client, client.post(url, headers=headers, **kwargs) as r:
        return r.status, await r.json()


@pytest.fixture
async def redis_client(verbund: lab.Verbund):
    client = aioredis.Redis.from_url(verbund.redis.url)
    yield client
    await client.aclose()


async def stored_trail(client: aioredis.Redis, number: str) -> list[dict]:
    return [json.loads(item) for item in await client.lrange(keys.aml(number), 0, -1)]


async def test_https_aml_is_stored_under_the_e164_number(verbund: lab.Verbund, start_service, redis_client) -> None:
    await start_service("jena")
    aml = {"Authorization": f"Bearer {verbund.aml_token}"}
    status, body = await post(verbund, "/aml/v1/https", aml, data=https_form("+4915112340001"))
    assert (status, body) == (202, {"stored": True})
    trail = await stored_trail(redis_client, "+4915112340001")
    assert trail[0]["lat"] == pytest.approx(50.6547)
    assert trail[0]["radius_m"] == 18
    assert trail[0]["confidence"] == pytest.approx(0.68)
    assert 0 < await redis_client.ttl(keys.aml("+4915112340001")) <= 3600


async def test_sms_aml_from_a_gateway_is_stored(verbund: lab.Verbund, start_service, redis_client) -> None:
    await start_service("jena")
    aml = {"Authorization": f"Bearer {verbund.aml_token}"}
    text = SMS_V1.format(top="20260101120000")
    status, _ = await post(verbund, "/aml/v1/sms", aml, data={"from": "015112340002", "text": text})
    assert status == 202
    trail = await stored_trail(redis_client, "+4915112340002")
    assert trail[0]["method"] == "GNSS"


@pytest.mark.parametrize(
    ("path", "data", "reason"),
    [
        (
            "/aml/v1/https",
            {"location_latitude": "91", "location_longitude": "12", "device_number": "+491511"},
            "latitude",
        ),
        ("/aml/v1/sms", {"from": "+4915112340003", "text": 'A"ML=1;lt=abc;lg=12;rd=5'}, "latitude"),
        ("/aml/v1/sms", {"from": "not a number", "text": SMS_V1.format(top="20260101120000")}, "number"),
        ("/aml/v1/sms", {"text": "hello"}, ""),
    ],
)
async def test_bad_aml_is_refused_with_2xx_and_a_reason_and_the_service_keeps_serving(
    verbund: lab.Verbund, start_service, path: str, data: dict, reason: str
) -> None:
    """2xx, as the AML HTTPS format asks (web/aml.py): the sender must not send it again and again."""
    jena = await start_service("jena")
    aml = {"Authorization": f"Bearer {verbund.aml_token}"}
    status, body = await post(verbund, path, aml, data=data)
    assert status == 202 and body["stored"] is False
    assert reason.lower() in body["refused"].lower()
    kind = "https" if path.endswith("https") else "sms"
    assert jena.registry.get_sample_value("verbund112_aml_messages_total", {"format": kind, "outcome": "refused"}) == 1
    status, _ = await post(verbund, "/aml/v1/https", aml, data=https_form("+4915112340004"))
    assert status == 202


async def test_aml_intake_is_authenticated(verbund: lab.Verbund, start_service) -> None:
    await start_service("jena", aml={"hmac_secret": SECRET})
    body = urlencode(https_form("+4915112340005"))
    form_type = {"Content-Type": "application/x-www-form-urlencoded"}
    assert (await post(verbund, "/aml/v1/https", form_type, data=body))[0] == 401
    reader = {"Authorization": f"Bearer {verbund.read_token}", **form_type}
    assert (await post(verbund, "/aml/v1/https", reader, data=body))[0] == 403
    admin = {"Authorization": f"Bearer {verbund.web_token}", **form_type}
    assert (await post(verbund, "/aml/v1/https", admin, data=body))[0] == 403  # admins manage, gateways deliver
    forged = {**signed_headers(SECRET, body.encode()), "X-AML-Signature": "sha256=" + "0" * 64, **form_type}
    assert (await post(verbund, "/aml/v1/https", forged, data=body))[0] == 401
    signed = {**signed_headers(SECRET, body.encode()), **form_type}
    assert (await post(verbund, "/aml/v1/https", signed, data=body))[0] == 202


async def test_a_replayed_stale_or_old_style_signed_aml_delivery_is_refused(
    verbund: lab.Verbund, start_service
) -> None:
    jena = await start_service("jena", aml={"hmac_secret": SECRET})  # aml.signature_window_s: 300
    body = urlencode(https_form("+4915112340015"))
    form_type = {"Content-Type": "application/x-www-form-urlencoded"}
    signed = {**signed_headers(SECRET, body.encode()), **form_type}
    assert (await post(verbund, "/aml/v1/https", signed, data=body))[0] == 202
    status, answer = await post(verbund, "/aml/v1/https", signed, data=body)  # captured and sent again
    assert (status, "used before") == (401, answer["error"][-11:])
    stale = {**signed_headers(SECRET, body.encode(), sent_at=time.time() - 400), **form_type}
    status, answer = await post(verbund, "/aml/v1/https", stale, data=body)
    assert status == 401 and "off the service's clock" in answer["error"]
    body_only = "sha256=" + hmac.new(SECRET.encode(), body.encode(), hashlib.sha256).hexdigest()
    status, answer = await post(verbund, "/aml/v1/https", {"X-AML-Signature": body_only, **form_type}, data=body)
    assert status == 401 and "X-AML-Nonce" in answer["error"]  # the signature format before 10/5
    refused = {reason: jena.registry.get_sample_value("verbund112_aml_signatures_refused_total", {"reason": reason})
               for reason in ("replay", "stale", "incomplete")}  # fmt: skip
    assert refused == {"replay": 1, "stale": 1, "incomplete": 1}


async def test_expired_aml_is_gone_after_its_ttl(verbund: lab.Verbund, start_service, redis_client) -> None:
    await start_service("jena", aml={"retention_s": 1})
    await redis_client.config_set("notify-keyspace-events", "Ex")
    key = keys.aml("+4915112340006")
    async with redis_client.pubsub() as pubsub:
        await pubsub.subscribe("__keyevent@0__:expired")
        aml = {"Authorization": f"Bearer {verbund.aml_token}"}
        assert (await post(verbund, "/aml/v1/https", aml, data=https_form("+4915112340006")))[0] == 202
        assert await redis_client.exists(key)
        async with asyncio.timeout(10):
            async for message in pubsub.listen():
                if message["type"] == "message" and message["data"] == key.encode():
                    break
    assert not await redis_client.exists(key)


async def test_a_call_is_routed_by_the_aml_fix_on_file(verbund: lab.Verbund, start_service, start_desks) -> None:
    jena = await start_service("jena")
    gera = await start_service("gera")
    async with asyncio.timeout(10):
        await jena.partner.reporting.wait()
    await start_desks("jena", ["jena-d1"])
    await start_desks("gera", ["gera-d1"])
    aml = {"Authorization": f"Bearer {verbund.aml_token}"}
    assert (await post(verbund, "/aml/v1/https", aml, data=https_form("+4915112340007")))[0] == 202
    with jena.hub.subscribe() as jena_events, gera.hub.subscribe() as gera_events:
        assert await place_call(verbund, "jena", "+4915112340007", talk_ms=300) == 0
        routed = await next_event(jena_events, CallRouted)
        answered = await next_event(gera_events, DispatcherAnswered, lambda e: e.call_id == routed.call_id)
    assert routed.decision.route is Route.PARTNER
    assert routed.decision.location is not None and routed.decision.location.source == "aml"
    assert answered.dispatcher == "gera-d1"
    assert json.dumps(routed.decision.reason)  # in words
