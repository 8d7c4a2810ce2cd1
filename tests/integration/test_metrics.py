"""What an operator's Prometheus reads from /metrics after real calls: the series alerts and the dashboard use."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from lab import lab
from tests.conftest import place_call
from tests.integration.test_routing_calls import GREIZ, both_services

pytestmark = pytest.mark.lab
TIMEOUT = aiohttp.ClientTimeout(total=10)
JENA = (50.9279, 11.5891, 25)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(verbund: lab.Verbund, site: str) -> Samples:
    """Every sample of the site's /metrics, by name and labels, as Prometheus would read it."""
    headers = {"Authorization": f"Bearer {verbund.read_token}"}
    url = f"http://127.0.0.1:{verbund.ports[site].web}/metrics"
    async with aiohttp.ClientSession(timeout=TIMEOUT) as client, client.get(url, headers=headers) as response:
        assert response.status == 200
        text = await response.text()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}  # fmt: skip


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def scraped_until(verbund: lab.Verbund, site: str, holds: Callable[[Samples], bool], what: str) -> Samples:
    deadline = time.monotonic() + 15
    while not holds(samples := await scrape(verbund, site)):
        assert time.monotonic() < deadline, f"{site}'s /metrics: not {what} within 15 s"
        await asyncio.sleep(0.2)
    return samples


async def test_metrics_after_a_local_and_a_partner_call_answered(
    verbund: lab.Verbund, start_service, start_desks
) -> None:
    await both_services(start_service)
    await start_desks("jena", ["jena-d1"])
    await start_desks("gera", ["gera-d1"])
    samples = await scraped_until(verbund, "jena", lambda s: value(s, "verbund112_desks", state="available") == 1,
                                  "one desk available")  # fmt: skip
    assert value(samples, "verbund112_partner_up") == 1
    assert value(samples, "verbund112_answer_time_seconds_count", route="local") == 0

    local = asyncio.create_task(place_call(verbund, "jena", "+4915112349101", talk_ms=4000, position=JENA))
    # while the dispatcher talks: their desk shows talking, and the caller no longer waits
    samples = await scraped_until(verbund, "jena", lambda s: value(s, "verbund112_desks", state="talking") == 1,
                                  "the desk talking")  # fmt: skip
    assert value(samples, "verbund112_callers_waiting") == 0
    assert value(samples, "verbund112_callers_longest_wait_seconds") == 0
    assert await local == 0
    partner = place_call(verbund, "jena", "+4915112349102", talk_ms=300, position=GREIZ)
    assert await partner == 0

    jena = await scraped_until(
        verbund, "jena", lambda s: value(s, "verbund112_answer_time_seconds_count", route="partner") == 1,
        "the partner call's answer time",
    )  # fmt: skip
    assert value(jena, "verbund112_answer_time_seconds_count", route="local") == 1
    assert value(jena, "verbund112_answer_time_seconds_count", route="external") == 0
    # answered within the 10 s bucket of NFPA 1225 (the desks answer at once)
    assert value(jena, "verbund112_answer_time_seconds_bucket", route="local", le="10.0") == 1
    assert value(jena, "verbund112_calls_routed_total", route="local") == 1
    assert value(jena, "verbund112_calls_routed_total", route="partner") == 1
    assert value(jena, "verbund112_fastagi_requests_total", outcome="answered") == 2
    assert value(jena, "verbund112_fastagi_requests_total", outcome="fallback") == 0
    assert value(jena, "verbund112_abandoned_calls_total", outcome="added") is None  # none abandoned
    assert value(jena, "verbund112_overflow_moves_total", outcome="moved") == 0
    assert value(jena, "verbund112_ami_connected") == 1
    assert value(jena, "verbund112_redis_up") == 1
    assert value(jena, "verbund112_redis_degraded_seconds_total") == 0
    assert value(jena, "verbund112_rules_same_as_partner") == 1
    assert value(jena, "verbund112_build_info", version=lab_version()) == 1
    assert (value(jena, "process_cpu_seconds_total") or 0) > 0
    assert (value(jena, "process_resident_memory_bytes") or 0) > 0

    # Gera answered the partner call but did not route it: its answer times stay empty
    gera = await scrape(verbund, "gera")
    assert value(gera, "verbund112_answer_time_seconds_count", route="partner") == 0
    assert value(gera, "verbund112_calls_routed_total", route="partner") == 0
    assert value(gera, "verbund112_partner_up") == 1


def lab_version() -> str:
    from verbund112 import __version__

    return __version__
