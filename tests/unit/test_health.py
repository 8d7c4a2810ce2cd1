"""/healthz and /readyz: no token, no data; /readyz says which parts are up and whether calls can be taken."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from click.testing import CliRunner

from lab.processes import free_tcp_port
from tests.unit.test_fastagi import service_settings
from verbund112.cli import main
from verbund112.service import Service, running
from web.health import readiness
from web.ports import Health

TIMEOUT = aiohttp.ClientTimeout(total=5)


@pytest.fixture
async def service() -> AsyncIterator[Service]:
    async with running(service_settings()) as started:  # nothing behind its AMI and Redis ports
        yield started


async def test_healthz_answers_without_a_token(service: Service) -> None:
    url = f"http://127.0.0.1:{service.web_port}/healthz"
    async with aiohttp.ClientSession(timeout=TIMEOUT) as client, client.get(url) as response:
        assert response.status == 200
        assert await response.json() == {"alive": True}


async def test_readyz_without_a_token_is_503_with_ami_down_and_names_the_parts(service: Service) -> None:
    url = f"http://127.0.0.1:{service.web_port}/readyz"
    async with aiohttp.ClientSession(timeout=TIMEOUT) as client, client.get(url) as response:
        assert response.status == 503
        body = await response.json()
    assert body == {
        "ready": False,
        "parts": {"ami": "down", "fastagi": "up", "rules": "up", "store": "down"},
        "down": ["ami"],
        "degraded": ["store"],
    }


async def test_a_token_is_not_needed_but_a_wrong_one_does_no_harm(service: Service) -> None:
    headers = {"Authorization": "Bearer wrong"}
    async with aiohttp.ClientSession(timeout=TIMEOUT) as client:
        async with client.get(f"http://127.0.0.1:{service.web_port}/healthz", headers=headers) as response:
            assert response.status == 200
        async with client.get(f"http://127.0.0.1:{service.web_port}/healthz/../api/v1/status") as response:
            assert response.status == 401  # the exemption is for the two paths exactly


@pytest.mark.parametrize(
    ("health", "ready", "down", "degraded"),
    [
        (Health(ami=True, fastagi=True, rules=True, store=True), True, [], []),
        (Health(ami=True, fastagi=True, rules=True, store=False), True, [], ["store"]),  # shared part: degraded
        (Health(ami=False, fastagi=True, rules=True, store=True), False, ["ami"], []),
        (Health(ami=True, fastagi=False, rules=True, store=True), False, ["fastagi"], []),
        (Health(ami=True, fastagi=True, rules=False, store=False), False, ["rules"], ["store"]),
    ],
)
def test_readiness_needs_ami_fastagi_and_rules_and_the_store_only_degrades(
    health: Health, ready: bool, down: list[str], degraded: list[str]
) -> None:
    is_ready, body = readiness(health)
    assert is_ready is ready
    assert body["ready"] is ready
    assert body["down"] == down
    assert body["degraded"] == degraded


async def test_the_healthcheck_command_asks_healthz_on_the_configured_port(
    service: Service, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The image's HEALTHCHECK: 0 while the service answers, 1 with the reason when nothing does."""
    monkeypatch.delenv("VERBUND112_CONFIG", raising=False)
    config = tmp_path / "jena.yaml"
    config.write_text(f"site: jena\nweb:\n  host: 0.0.0.0\n  port: {service.web_port}\n")
    runner = CliRunner()
    answered = await asyncio.to_thread(runner.invoke, main, ["healthcheck", "--config", str(config)])
    assert (answered.exit_code, answered.output) == (0, f"http://127.0.0.1:{service.web_port}/healthz: 200\n")

    config.write_text(f"site: jena\nweb:\n  port: {free_tcp_port()}\n")  # nobody there
    refused = await asyncio.to_thread(runner.invoke, main, ["healthcheck", "--config", str(config)])
    assert refused.exit_code == 1
    assert "Connection refused" in refused.output
