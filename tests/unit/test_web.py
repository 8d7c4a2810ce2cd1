"""Every HTTP entry point needs a token; roles limit what a token may do."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import aiohttp
import pytest
from pydantic import SecretStr

from tests.support.waiting import eventually
from tests.unit.test_fastagi import service_settings
from verbund112.service import Service, running
from web.settings import TokenGrant

TIMEOUT = aiohttp.ClientTimeout(total=5)


@pytest.fixture
async def service() -> AsyncIterator[Service]:
    async with running(service_settings()) as started:
        yield started


@pytest.mark.parametrize("path", ["/api/v1/status", "/metrics", "/nowhere", "/api/v1/supervisor", "/supervisor"])
@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic dDpk"}, {"Authorization": "Bearer "}],
)
async def test_no_valid_token_no_access(service: Service, path: str, headers: dict) -> None:
    url = f"http://127.0.0.1:{service.web_port}{path}"
    async with aiohttp.ClientSession(timeout=TIMEOUT) as client, client.get(url, headers=headers) as response:
        assert response.status == 401
        assert "token" in (await response.json())["error"]


async def test_status_with_a_read_token(service: Service) -> None:
    headers = {"Authorization": "Bearer t-read-0123456789"}
    async with aiohttp.ClientSession(timeout=TIMEOUT) as client:
        async with client.get(f"http://127.0.0.1:{service.web_port}/api/v1/status", headers=headers) as response:
            assert response.status == 200
            body = await response.json()
        async with client.get(f"http://127.0.0.1:{service.web_port}/metrics", headers=headers) as response:
            assert response.status == 200
            assert "verbund112_fastagi_requests" in await response.text()
    assert body["site"] == "jena"
    assert body["ami"]["connected"] is False  # nothing listens on its AMI port
    assert body["redis"]["reachable"] is False


async def test_unknown_path_with_a_token_is_a_json_404(service: Service) -> None:
    headers = {"Authorization": "Bearer t-admin-0123456789"}
    url = f"http://127.0.0.1:{service.web_port}/nowhere"
    async with aiohttp.ClientSession(timeout=TIMEOUT) as client, client.get(url, headers=headers) as response:
        assert response.status == 404
        assert "error" in await response.json()


async def test_aml_is_refused_with_503_while_redis_is_down_so_the_sender_retries() -> None:
    base = service_settings()
    web_settings = base.web.model_copy(
        update={"tokens": {SecretStr("t-aml-0123456789"): TokenGrant(role="aml", name="gateway")}}
    )
    async with running(base.model_copy(update={"web": web_settings})) as aml_service:
        url = f"http://127.0.0.1:{aml_service.web_port}/aml/v1/https"
        form = {"location_latitude": "50.65", "location_longitude": "12.19", "location_accuracy": "20",
                "device_number": "+4915112345678"}  # fmt: skip
        headers = {"Authorization": "Bearer t-aml-0123456789"}
        async with aiohttp.ClientSession(timeout=TIMEOUT) as client, client.post(url, data=form, headers=headers) as r:
            assert r.status == 503
            assert "retry" in (await r.json())["error"]
        assert aml_service.store.reachable is False


async def test_the_supervisor_view_with_redis_down_shows_the_partner_unknown_and_says_why(service: Service) -> None:
    headers = {"Authorization": "Bearer t-read-0123456789"}
    url = f"http://127.0.0.1:{service.web_port}/api/v1/supervisor"
    async with aiohttp.ClientSession(timeout=TIMEOUT) as client, client.get(url, headers=headers) as response:
        assert response.status == 200
        view = await response.json()
    assert view["seen_from"] == "jena"
    assert view["sites"]["gera"]["state"] == "unknown"
    assert view["sites"]["gera"]["problem"].startswith("store unreachable")
    assert view["sites"]["jena"]["state"] == "no-asterisk"  # nothing listens on its AMI port
    assert view["overflow"]["problem"].startswith("Redis: ")
    assert view["overflow"]["last_hour"] == {}


async def test_every_response_says_no_referrer(service: Service) -> None:
    """A page's address holds its token: it must never go on to another site in a Referer header."""
    base = f"http://127.0.0.1:{service.web_port}"
    async with aiohttp.ClientSession(timeout=TIMEOUT) as client:
        for path, headers, status in [
            ("/supervisor?token=t-read-0123456789", {}, 200),
            ("/api/v1/status", {"Authorization": "Bearer t-read-0123456789"}, 200),
            ("/api/v1/status", {}, 401),
            ("/nowhere", {"Authorization": "Bearer t-read-0123456789"}, 404),
            ("/api/v1/abandoned", {"Authorization": "Bearer t-read-0123456789"}, 403),
        ]:
            async with client.get(base + path, headers=headers) as response:
                assert response.status == status
                assert response.headers.get("Referrer-Policy") == "no-referrer", path


async def test_the_access_log_has_each_request_without_its_token(
    service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="web.access")
    page = f"http://127.0.0.1:{service.web_port}/supervisor?token=t-read-0123456789"
    async with aiohttp.ClientSession(timeout=TIMEOUT) as client, client.get(page) as response:
        assert response.status == 200

    def access_lines() -> list[str]:
        return [record.getMessage() for record in caplog.records if record.name == "web.access"]

    # the line is written once the response is out: soon after the client has it, not before
    await eventually(lambda: any("GET /supervisor 200" in line for line in access_lines()), "the request logged")
    assert not any("t-read-0123456789" in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/api/v1/abandoned"), ("POST", "/api/v1/abandoned/jena-1.1/callback-done")]
)
async def test_the_read_and_admin_roles_neither_see_caller_numbers_nor_act_on_calls(
    service: Service, method: str, path: str
) -> None:
    url = f"http://127.0.0.1:{service.web_port}{path}"
    async with aiohttp.ClientSession(timeout=TIMEOUT) as client:
        for token in ("t-read-0123456789", "t-admin-0123456789"):
            async with client.request(method, url, headers={"Authorization": f"Bearer {token}"}) as response:
                assert response.status == 403
                assert "dispatcher or supervisor" in (await response.json())["error"]
