"""Every HTTP entry point needs a token; roles limit what a token may do."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.unit.test_fastagi import service_settings
from verbund112.service import Service, running

TIMEOUT = aiohttp.ClientTimeout(total=5)


@pytest.fixture
async def service() -> AsyncIterator[Service]:
    async with running(service_settings()) as started:
        yield started


@pytest.mark.parametrize("path", ["/api/v1/status", "/metrics", "/nowhere"])
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
