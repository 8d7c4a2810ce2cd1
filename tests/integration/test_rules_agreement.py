"""Both sites must route by the same rules: with different rules at Jena and Gera (the real lab: both
services, Redis, the heartbeats), each shows the mismatch in /api/v1/status, in the supervisor view and
in /metrics; once Gera loads Jena's rules, both say so."""

from __future__ import annotations

import asyncio
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Browser

from lab import lab
from tests.integration.test_dispatch_page import browser  # noqa: F401 (the fixture)
from verbund112.service import Service

pytestmark = pytest.mark.lab
TIMEOUT = aiohttp.ClientTimeout(total=5)


async def get(service: Service, path: str, token: str) -> Any:
    url = f"http://127.0.0.1:{service.web_port}{path}"
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session, session.get(url, headers=headers) as response:
        assert response.status == 200
        return await response.json() if path.startswith("/api/") else await response.text()


async def status_when(service: Service, token: str, wanted: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """Polls /api/v1/status until it shows what is wanted (the heartbeat comes every interval)."""
    deadline = time.monotonic() + 15
    while True:
        status = await get(service, "/api/v1/status", token)
        if wanted(status["rules"]):
            return status["rules"]
        assert time.monotonic() < deadline, f"status never showed it: {status['rules']}"
        await asyncio.sleep(0.2)


def same_metric(metrics: str) -> str:
    found = re.search(r"^verbund112_rules_same_as_partner (\S+)$", metrics, re.M)
    assert found, "verbund112_rules_same_as_partner not exported"
    return found.group(1)


async def test_different_rules_at_the_two_sites_show_in_status_supervisor_view_and_metrics(
    verbund: lab.Verbund,
    start_service,
    tmp_path: Path,
    browser: Browser,  # noqa: F811 (the fixture)
) -> None:
    rules_dir = tmp_path / "gera-rules"
    shutil.copytree(verbund.rules_file.parent, rules_dir)
    gera_rules = rules_dir / verbund.rules_file.name
    text = gera_rules.read_text()
    assert "aml_max_age_s: 600" in text
    gera_rules.write_text(text.replace("aml_max_age_s: 600", "aml_max_age_s: 590"))

    jena = await start_service("jena")
    gera = await start_service("gera", rules_file=str(gera_rules))
    jena_digest, gera_digest = jena.rules.rules.digest, gera.rules.rules.digest  # type: ignore[union-attr]
    assert jena_digest != gera_digest
    token = verbund.read_token

    for own, partner, own_digest, partner_digest in ((jena, "gera", jena_digest, gera_digest),
                                                      (gera, "jena", gera_digest, jena_digest)):  # fmt: skip
        rules = await status_when(own, token, lambda r: r["partner_digest"] is not None)
        assert (rules["digest"], rules["partner_digest"], rules["same"]) == (own_digest, partner_digest, False)
        view = await get(own, "/api/v1/supervisor", token)
        assert view["rules"]["same"] is False
        assert view["rules"]["text"].startswith("ACHTUNG: Die Leitstellen arbeiten mit unterschiedlichen")
        assert f"ZLS {partner} {partner_digest[:12]}" in view["rules"]["text"]
        metrics = await get(own, "/metrics", token)
        assert same_metric(metrics) == "0.0"
        assert f'verbund112_rules_info{{digest="{own_digest}"}} 1.0' in metrics

    page = await browser.new_page()
    await page.goto(f"http://127.0.0.1:{jena.web_port}/supervisor?token={token}")
    await page.wait_for_selector("#rules.differ[data-same='false']")
    assert (await page.inner_text("#rules")).startswith("ACHTUNG: Die Leitstellen arbeiten mit unterschiedlichen")

    # Gera's admin loads Jena's rules: both sites see the same rules at the next heartbeat
    change = await gera.rules.change("test-admin", verbund.rules_file.read_text())
    assert change.applied and change.new_digest == jena_digest
    for own in (jena, gera):
        rules = await status_when(own, token, lambda r: r["same"] is True)
        assert rules["digest"] == rules["partner_digest"] == jena_digest
        assert same_metric(await get(own, "/metrics", token)) == "1.0"
        view = await get(own, "/api/v1/supervisor", token)
        assert view["rules"]["text"] == f"Beide Leitstellen arbeiten mit denselben Routing-Regeln ({jena_digest[:12]})."
    await page.wait_for_selector("#rules[data-same='true']:not(.differ)", timeout=10000)
    await page.close()
