"""AML pull: the answer parser (pure), the client against a stand-in HTTPS server that
requires a client certificate and basic auth, and the poll tasks against fakes."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import prometheus_client as prom
import pytest
from aiohttp import web
from pydantic import SecretStr, ValidationError

from aml.parse import AmlMessage
from aml.pull import (
    AmlPullClient,
    AmlPullSettings,
    PullAnswer,
    PullError,
    PullSetupError,
    backoff,
    parse_answer,
    server_number,
)
from routing.decision import AmlFix
from routing.location import Position
from tests.support.aml_server import NO_DATA, PASSWORD, USERNAME, AmlServer, Pki, fix, make_pki, serve
from verbund112.features.aml_polls import AmlPolls, PullMetrics, number_to_poll
from verbund112.store import StoreError

NUMBER = "+4915112345678"
BERLIN = ZoneInfo("Europe/Berlin")
NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC).timestamp()


def answer(data: Any, now: float = NOW, zone: ZoneInfo = BERLIN) -> PullAnswer:
    return parse_answer(json.dumps(data).encode(), NUMBER, zone, now)


# -- the answer, pure ------------------------------------------------------------------


def test_the_known_answer_shape_strings_numbers_and_a_local_date_time() -> None:
    # as a Leitstelle's client shows it: accuracy as text, coordinates as numbers, local time
    entry = {"location_latitude": 50.9272, "location_longitude": 11.5864, "location_time": "2025-03-01 12:59:30",
             "location_accuracy": "15.515", "location_vertical_accuracy": "2.5", "location_altitude": "160.5",
             "location_source": "wifi", "status": "ok"}  # fmt: skip
    result = answer([entry])
    assert result.problems == ()
    (message,) = result.fixes
    assert message.number == NUMBER
    assert message.position == Position(50.9272, 11.5864, 15.515, "Circle", "WiFi")
    assert message.fix_time == NOW - 30  # 12:59:30 in Berlin (CET) is 11:59:30 UTC
    assert message.altitude_m == 160.5


@pytest.mark.parametrize(
    ("data", "fixes"),
    [
        (NO_DATA, 0),
        ([], 0),
        ({"status": "no aml data"}, 0),  # an object instead of an array
        (fix(50.9, 11.6, time_ms=int(NOW * 1000)), 1),
        ([fix(50.9, 11.6, time_ms=int(NOW * 1000) - 5000), fix(50.91, 11.61, time_ms=int(NOW * 1000))], 2),
        ([{"status": "ok"}], 0),  # ok, but no coordinates
        ([fix(0.0, 0.0)], 0),  # the handsets' "no location" filler
        ([fix(50.9, 11.6, location_time="2025-03-01T11:59:00Z")], 1),  # with a zone: the zone setting is not used
        ([fix(50.9, 11.6, device_number="015112345678")], 1),  # the number echoed in other forms
        ([fix(50.9, 11.6, device_number="4915112345678")], 1),
        ([fix(50.9, 11.6, device_number="+49 151 12345678")], 1),
    ],
)
def test_no_fix_and_fixes(data: Any, fixes: int) -> None:
    assert len(answer(data).fixes) == fixes


def test_fixes_come_oldest_first_so_the_newest_ends_at_the_head_of_the_trail() -> None:
    newer, older = fix(50.91, 11.61, time_ms=int(NOW * 1000)), fix(50.9, 11.6, time_ms=int(NOW * 1000) - 60_000)
    result = answer([newer, older])
    assert [m.fix_time for m in result.fixes] == [NOW - 60, NOW]


def test_of_several_fixes_of_one_time_the_most_accurate_is_the_best_and_stored_last() -> None:
    now_ms = int(NOW * 1000)
    wifi, gps, also_gps, older = (fix(50.90, 11.60, 89.5, now_ms), fix(50.91, 11.61, 15.5, now_ms),
                                  fix(50.92, 11.62, 15.5, now_ms), fix(50.93, 11.63, 3.0, now_ms - 60_000))  # fmt: skip
    result = answer([wifi, gps, also_gps, older])
    assert [m.position.lat for m in result.fixes if m.position] == [50.93, 50.90, 50.92, 50.91]
    assert result.best is result.fixes[-1]  # the first sent of the two most accurate
    assert answer(NO_DATA).best is None


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"<html>Wartungsarbeiten</html>", "not JSON"),
        (b'"just text"', "not an object"),
        (b"[1, 2]", "not an object"),
        (json.dumps([{"status": "error: quota exceeded"}]).encode(), "status"),
        (json.dumps([fix(95.0, 11.6)]).encode(), "latitude out of range"),
        (json.dumps([fix(50.9, 11.6, location_accuracy=True)]).encode(), "neither a number nor text"),
        (json.dumps([fix(50.9, 11.6, location_accuracy={"m": 5})]).encode(), "neither a number nor text"),
        (json.dumps([fix(50.9, 11.6, location_time="yesterday")]).encode(), "location_time"),
        (json.dumps([fix(50.9, 11.6, device_number="+4915199999999")]).encode(), "another number"),
        (json.dumps([fix(50.9, 11.6, time_ms=int(NOW * 1000) + 3_600_000)]).encode(), "in the future"),
        (json.dumps([{"status": "ok"}] * 101).encode(), "at most"),
        (b"[NaN]", "not an object"),
    ],
)
def test_garbage_is_a_bad_response_with_the_reason(body: bytes, reason: str) -> None:
    with pytest.raises(PullError, match=reason) as refused:
        parse_answer(body, NUMBER, BERLIN, NOW)
    assert refused.value.outcome == "bad-response"


def test_a_bad_entry_beside_good_ones_is_skipped_with_its_reason() -> None:
    result = answer([fix(95.0, 11.6), fix(50.9, 11.6, time_ms=int(NOW * 1000))])
    assert len(result.fixes) == 1
    assert "latitude out of range" in result.problems[0]


def test_a_local_time_in_the_wrong_zone_shows_as_a_fix_from_the_future() -> None:
    # the server wrote local time, but the setting says UTC: an hour ahead, refused with a hint
    with pytest.raises(PullError, match="time_zone"):
        answer([fix(50.9, 11.6, location_time="2025-03-01 13:00:00")], zone=ZoneInfo("UTC"))


@pytest.mark.parametrize(
    ("number_format", "e164", "sent"),
    [("e164", "+4915112345678", "+4915112345678"), ("international", "+4915112345678", "4915112345678"),
     ("national", "+4915112345678", "015112345678"), ("national", "+48601234567", "0048601234567")],
)  # fmt: skip
def test_the_number_as_the_server_wants_it(number_format: str, e164: str, sent: str) -> None:
    assert server_number(e164, number_format) == sent


def test_backoff_grows_to_its_cap() -> None:
    delays = backoff(2.0, 1.5, 5.0)
    assert [next(delays) for _ in range(5)] == [2.0, 3.0, 4.5, 5.0, 5.0]


@pytest.mark.parametrize(
    ("caller", "polled"),
    [("+4915112345678", "+4915112345678"), ("015112345678", "+4915112345678"), ("004917012345678", "+4917012345678"),
     ("+48601234567", "+48601234567"), ("036411234567", None), ("+4936411234567", None), ("", None),
     ("anonymous", None), ("112", None), ("+49151", None)],
)  # fmt: skip
def test_only_numbers_that_can_have_aml_are_polled(caller: str, polled: str | None) -> None:
    assert number_to_poll(caller) == polled


# -- settings ------------------------------------------------------------------------


def test_enabled_pull_needs_url_certificate_and_credentials() -> None:
    with pytest.raises(ValidationError, match="url, client_cert, username, password"):
        AmlPullSettings(enabled=True)
    with pytest.raises(ValidationError, match="https"):
        AmlPullSettings(enabled=True, url="http://aml.invalid/get-data", client_cert=Path("c.pem"), username="u",
                        password=SecretStr("p"))  # fmt: skip
    with pytest.raises(ValidationError, match="time zone"):
        AmlPullSettings(time_zone="Mitteleuropa/Jena")
    assert not AmlPullSettings().enabled


# -- the client against the stand-in server --------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
async def server(pki: Pki) -> AsyncIterator[AmlServer]:
    async with serve(pki) as running:
        yield running


def pull_settings(pki: Pki, url: str, **changes: Any) -> AmlPullSettings:
    values: dict[str, Any] = {
        "enabled": True, "url": url, "client_cert": pki.client_cert, "client_key": pki.client_key,
        "ca_file": pki.ca, "username": USERNAME, "password": SecretStr(PASSWORD), "request_timeout": 2.0,
    }  # fmt: skip
    return AmlPullSettings(**(values | changes))


async def fetch(settings: AmlPullSettings, number: str = NUMBER) -> PullAnswer:
    async with AmlPullClient(settings) as client:
        return await client.fetch(number)


async def test_a_fix_by_number_with_certificate_and_basic_auth(pki: Pki, server: AmlServer) -> None:
    now_ms = int(time.time() * 1000)
    server.answer = lambda number: [fix(50.9272, 11.5864, 9, time_ms=now_ms)] if number == NUMBER else NO_DATA
    result = await fetch(pull_settings(pki, server.url))
    assert server.requests == [NUMBER]  # the "+" arrives as a "+", not as a space
    (message,) = result.fixes
    assert message.position is not None and message.position.radius_m == 9
    assert message.fix_time == now_ms / 1000


async def test_no_fix_yet(pki: Pki, server: AmlServer) -> None:
    assert (await fetch(pull_settings(pki, server.url))).fixes == ()
    server.answer = lambda _: web.json_response({"error": "unknown number"}, status=404)
    assert (await fetch(pull_settings(pki, server.url))).fixes == ()


async def test_wrong_basic_auth_is_refused(pki: Pki, server: AmlServer) -> None:
    with pytest.raises(PullError) as refused:
        await fetch(pull_settings(pki, server.url, password=SecretStr("wrong")))
    assert refused.value.outcome == "refused"
    assert server.refused == 1 and server.requests == []


@pytest.mark.parametrize("client", ["none", "stranger"])
async def test_without_an_accepted_client_certificate_no_connection(pki: Pki, server: AmlServer, client: str) -> None:
    settings = pull_settings(pki, server.url, client_cert=pki.stranger_cert, client_key=pki.stranger_key)
    if client == "none":  # the settings refuse that; the server must, too
        settings = settings.model_copy(update={"client_cert": None, "client_key": None})
    with pytest.raises(PullError) as refused:
        await fetch(settings)
    # TLS 1.3: the server's alert may come only when the client reads; either way, no request got through
    assert refused.value.outcome in ("tls", "unreachable")
    assert server.requests == [] and server.refused == 0


async def test_a_server_certificate_from_another_ca_is_not_trusted(pki: Pki, server: AmlServer) -> None:
    with pytest.raises(PullError) as refused:
        await fetch(pull_settings(pki, server.url, ca_file=pki.client_ca))
    assert refused.value.outcome == "tls"
    assert server.requests == []


async def test_a_server_that_does_not_answer_is_a_timeout(pki: Pki, server: AmlServer) -> None:
    never = asyncio.Event()
    server.answer = lambda _: never.wait()
    with pytest.raises(PullError) as failed:
        await fetch(pull_settings(pki, server.url, request_timeout=0.3))
    assert failed.value.outcome == "timeout"
    never.set()


@pytest.mark.parametrize(
    ("response", "outcome"),
    [
        (lambda: web.Response(text="<html>Wartung</html>", content_type="text/html"), "bad-response"),
        (lambda: web.Response(status=500, text="oops"), "http-error"),
        (lambda: web.Response(status=503), "http-error"),
        # redirects are not followed: the credentials go nowhere else
        (lambda: web.Response(status=302, headers={"Location": "https://elsewhere.invalid/"}), "http-error"),
        (lambda: web.Response(body=b"[" + b"{}," * 200_000 + b"{}]"), "bad-response"),  # too large
    ],
)
async def test_bad_answers_are_errors_with_an_outcome(pki: Pki, server: AmlServer, response: Any, outcome: str) -> None:
    server.answer = lambda _: response()
    with pytest.raises(PullError) as failed:
        await fetch(pull_settings(pki, server.url))
    assert failed.value.outcome == outcome


async def test_nothing_listening_is_unreachable(pki: Pki) -> None:
    with pytest.raises(PullError) as failed:
        await fetch(pull_settings(pki, "https://127.0.0.1:1/get-data"))
    assert failed.value.outcome == "unreachable"


def test_unreadable_certificate_files_are_a_setup_error(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(PullSetupError, match="TLS set-up"):
        AmlPullClient(pull_settings(pki, "https://127.0.0.1:1/get-data", client_cert=tmp_path / "missing.pem"))
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    with pytest.raises(PullSetupError):
        AmlPullClient(pull_settings(pki, "https://127.0.0.1:1/get-data", ca_file=garbage))
    # the key of another certificate
    with pytest.raises(PullSetupError):
        AmlPullClient(pull_settings(pki, "https://127.0.0.1:1/get-data", client_key=pki.stranger_key))


# -- the poll tasks, against fakes ------------------------------------------------------


class Fakes:
    """The server, the store and the clock between rounds, as the poll tasks see them."""

    def __init__(self) -> None:
        self.answers: list[PullAnswer | Exception] = []  # the next answers; then no fix
        self.asked = 0
        self.asked_event = asyncio.Event()
        self.store_fix: AmlFix | None = None
        self.stored: list[tuple[str, AmlMessage]] = []
        self.store_down = 0  # this many store calls fail
        self.latest_down = False
        self.delays: list[float] = []

    async def fetch(self, number: str) -> PullAnswer:
        self.asked += 1
        self.asked_event.set()
        item = self.answers.pop(0) if self.answers else PullAnswer(())
        if isinstance(item, Exception):
            raise item
        return item

    async def latest(self, number: str) -> AmlFix | None:
        if self.latest_down:
            raise StoreError("Timeout")
        return self.store_fix

    async def store(self, number: str, message: AmlMessage) -> None:
        if self.store_down:
            self.store_down -= 1
            raise StoreError("Connection refused")
        self.stored.append((number, message))
        assert message.position is not None
        self.store_fix = AmlFix(message.position, message.fix_time or time.time())

    async def sleep(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(0)

    async def asked_at_least(self, count: int) -> None:
        async with asyncio.timeout(5):
            while self.asked < count:
                self.asked_event.clear()
                await self.asked_event.wait()


def message(lat: float = 50.93, fix_time: float | None = None) -> AmlMessage:
    return AmlMessage(NUMBER, Position(lat, 11.59, 10, "Circle", "GNSS"), 0.68, "GNSS", fix_time or time.time(),
                      None, None, None, None, "https")  # fmt: skip


def polls_for(fakes: Fakes, **changes: Any) -> tuple[AmlPolls, PullMetrics]:
    settings = AmlPullSettings(**({"backoff_first": 1.0, "backoff_factor": 2.0, "backoff_max": 4.0} | changes))
    metrics = PullMetrics(prom.CollectorRegistry())
    return AmlPolls(settings, metrics, latest=fakes.latest, store=fakes.store, sleep=fakes.sleep), metrics


def count(metric: Any, label: str) -> float:
    return float(metric.labels(label)._value.get())


async def test_polls_with_backoff_until_a_fix_and_stores_it() -> None:
    fakes = Fakes()
    fakes.answers = [PullAnswer(()), PullAnswer(()), PullAnswer(()), PullAnswer(()), PullAnswer((message(),))]
    polls, metrics = polls_for(fakes)
    async with polls.polling(fakes.fetch):
        polls.call_started("u1", "jena-1", "0151 12345678")
        assert await polls.finished("u1") == "fix"
    assert fakes.asked == 5
    assert fakes.delays == [1.0, 2.0, 4.0, 4.0]
    assert [number for number, _ in fakes.stored] == [NUMBER]
    assert count(metrics.requests, "no-fix") == 4 and count(metrics.requests, "fix") == 1
    assert count(metrics.ended, "fix") == 1
    assert polls.polls == {}


async def test_the_call_ending_stops_polling() -> None:
    fakes = Fakes()
    polls, metrics = polls_for(fakes)
    async with polls.polling(fakes.fetch):
        polls.call_started("u1", "jena-1", NUMBER)
        await fakes.asked_at_least(3)
        polls.call_ended("u1")
        assert await polls.finished("u1") == "call-ended"
        asked = fakes.asked
        assert polls.polls == {}
    assert fakes.asked == asked
    assert count(metrics.ended, "call-ended") == 1


async def test_a_fix_already_in_the_store_means_no_request() -> None:
    fakes = Fakes()
    fakes.store_fix = AmlFix(Position(50.9, 11.6, 20, "Circle", "GNSS"), time.time() - 5)
    polls, _ = polls_for(fakes)
    async with polls.polling(fakes.fetch):
        polls.call_started("u1", "jena-1", NUMBER)
        assert await polls.finished("u1") == "fix-in-store"
    assert fakes.asked == 0


async def test_a_fix_of_an_earlier_call_is_stored_but_polling_goes_on() -> None:
    fakes = Fakes()
    fakes.store_fix = AmlFix(Position(50.9, 11.6, 20, "Circle", "GNSS"), time.time() - 1800)  # half an hour ago
    old = message(50.90, time.time() - 1800)
    fakes.answers = [PullAnswer((old,)), PullAnswer((old,)), PullAnswer((old, message(50.95)))]
    polls, _ = polls_for(fakes)
    async with polls.polling(fakes.fetch):
        polls.call_started("u1", "jena-1", NUMBER)
        assert await polls.finished("u1") == "fix"
    assert fakes.asked == 3
    assert [m.position.lat for _, m in fakes.stored if m.position] == [50.90, 50.95]  # the old one once


async def test_redis_down_costs_rounds_not_the_fix() -> None:
    fakes = Fakes()
    fakes.latest_down = True
    fakes.store_down = 2
    fakes.answers = [PullAnswer((message(),))] * 3
    polls, _ = polls_for(fakes)
    async with polls.polling(fakes.fetch):
        polls.call_started("u1", "jena-1", NUMBER)
        assert await polls.finished("u1") == "fix"
    assert fakes.asked == 3 and len(fakes.stored) == 1


async def test_server_errors_are_counted_and_polling_goes_on() -> None:
    fakes = Fakes()
    fakes.answers = [PullError("timeout", "no answer"), PullError("bad-response", "not JSON"),
                     PullAnswer((message(),))]  # fmt: skip
    polls, metrics = polls_for(fakes)
    async with polls.polling(fakes.fetch):
        polls.call_started("u1", "jena-1", NUMBER)
        assert await polls.finished("u1") == "fix"
    assert count(metrics.requests, "timeout") == 1 and count(metrics.requests, "bad-response") == 1


async def test_a_bug_ends_one_poll_not_the_others() -> None:
    fakes = Fakes()
    fakes.answers = [RuntimeError("a bug")]
    polls, metrics = polls_for(fakes)
    async with polls.polling(fakes.fetch):
        polls.call_started("u1", "jena-1", NUMBER)
        assert await polls.finished("u1") == "error"
        polls.call_started("u2", "jena-2", "+4915112345679")
        await fakes.asked_at_least(2)
        assert "u2" in polls.polls
    assert polls.ended["u2"] == "shutdown"
    assert count(metrics.ended, "error") == 1


async def test_polling_ends_after_the_maximum_duration() -> None:
    fakes = Fakes()
    polls, _ = polls_for(fakes, max_duration=0.2)
    async with polls.polling(fakes.fetch):
        polls.call_started("u1", "jena-1", NUMBER)
        assert await polls.finished("u1") == "max-duration"


async def test_numbers_without_aml_limits_and_early_hangups_start_nothing() -> None:
    fakes = Fakes()
    polls, metrics = polls_for(fakes, max_polls=1)
    polls.call_started("u0", "jena-0", NUMBER)  # not polling yet
    async with polls.polling(fakes.fetch):
        polls.call_started("u1", "jena-1", "036411234567")  # fixed line: no AML
        polls.call_ended("u2")  # hung up before its routing was announced
        polls.call_started("u2", "jena-2", NUMBER)
        polls.call_started("u3", "jena-3", NUMBER)
        polls.call_started("u3", "jena-3", NUMBER)  # announced twice: one poll
        polls.call_started("u4", "jena-4", "+4915112345679")  # over the limit
        assert set(polls.polls) == {"u3"}
    assert count(metrics.skipped, "number") == 1
    assert count(metrics.skipped, "limit") == 1
    assert count(metrics.skipped, "not-running") == 1
    assert polls.ended["u3"] == "shutdown"
    assert polls.polls == {}


# -- the service: wired to its events, Redis down ----------------------------------------


async def test_the_service_polls_for_a_routed_call_while_redis_is_down_and_stops_at_hangup(
    pki: Pki, server: AmlServer
) -> None:
    from routing.decision import Decision, Route
    from telephony.events import ChannelHungUp
    from tests.unit.test_fastagi import service_settings
    from verbund112.features.hub import CallRouted
    from verbund112.service import running

    settings = service_settings(aml_pull=pull_settings(pki, server.url, backoff_first=0.05, backoff_max=0.1))
    async with running(settings) as service:  # its Redis port has nobody listening
        decision = Decision(Route.LOCAL, "jena", "112-jena", None, "test", None, False, NUMBER)
        async with asyncio.timeout(10):
            await service.aml_pull.settled.wait()
            assert service.aml_pull.polls.running
            service.hub.publish(CallRouted("jena", "jena-1.1", "jena-1.1", NUMBER, None, "", decision, None))
            await server.asked(NUMBER, times=3)
        service.hub.publish(ChannelHungUp("jena", "jena-1.1", "jena-1.1", "jena-1.1", "PJSIP/carrier-1", 16))
        async with asyncio.timeout(10):
            assert await service.aml_pull.polls.finished("jena-1.1") == "call-ended"
        assert service.store.reachable is False


async def test_the_service_runs_without_the_pull_when_the_certificate_is_unreadable(pki: Pki, tmp_path: Path) -> None:
    from tests.unit.test_fastagi import service_settings
    from verbund112.service import running

    broken = pull_settings(pki, "https://127.0.0.1:1/get-data", client_cert=tmp_path / "expired-and-gone.pem")
    async with running(service_settings(aml_pull=broken)) as service:
        async with asyncio.timeout(10):
            await service.aml_pull.settled.wait()
        assert "TLS set-up" in service.aml_pull.problem
        assert not service.aml_pull.polls.running
        assert service.fastagi.port  # routing goes on


async def test_a_swallowed_cancellation_still_ends_the_poll() -> None:
    # redis-py can turn a cancellation into a plain return; the poll must not go on after the call ended
    fakes = Fakes()
    polls, _ = polls_for(fakes)
    swallowing = asyncio.Event()

    async def latest(number: str) -> AmlFix | None:
        if fakes.asked >= 2:
            swallowing.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                return None  # what redis-py may do
        return None

    polls._latest = latest
    async with polls.polling(fakes.fetch):
        polls.call_started("u1", "jena-1", NUMBER)
        async with asyncio.timeout(5):
            await swallowing.wait()
        polls.call_ended("u1")
        async with asyncio.timeout(5):
            assert await polls.finished("u1") == "call-ended"
    assert fakes.asked == 2
