"""Both sites must route by the same rules: the digest travels in the heartbeat and is compared (pure parts)."""

from __future__ import annotations

import json
import math

import prometheus_client as prom
import pytest

from overflow.state import SiteSnapshot
from overflow.supervision import rules_json
from tests.unit.test_fastagi import service_settings
from verbund112.features.rules_agreement import RulesAgreement
from verbund112.service import Service

NOW = 1_700_000_000.0
OURS = "a" * 64
OTHER = "b" * 64


def snapshot(digest: str) -> SiteSnapshot:
    return SiteSnapshot("gera", NOW, True, (), (), rules_digest=digest)


def test_the_digest_travels_in_the_heartbeat_snapshot() -> None:
    data = json.loads(json.dumps(snapshot(OURS).to_json()))
    assert data["rules_digest"] == OURS
    assert SiteSnapshot.from_json(data, NOW, max_age_s=2).rules_digest == OURS


@pytest.mark.parametrize("digest", [None, 42, "not-hex", "A" * 64, "a" * 65])
def test_a_missing_or_malformed_digest_is_unknown_and_the_report_still_counts(digest: object) -> None:
    data = snapshot(OURS).to_json()
    if digest is None:
        del data["rules_digest"]  # a partner of an older version
    else:
        data["rules_digest"] = digest
    back = SiteSnapshot.from_json(data, NOW, max_age_s=2)
    assert back.rules_digest == ""
    assert back.ami_connected  # the queue state is still trusted: the overflow needs it


def test_the_same_rules_at_both_sites() -> None:
    shown = rules_json("jena", OURS, "gera", snapshot(OURS))
    assert (shown["digest"], shown["partner_digest"], shown["same"]) == (OURS, OURS, True)
    assert shown["text"] == f"Beide Leitstellen arbeiten mit denselben Routing-Regeln ({OURS[:12]})."


def test_different_rules_are_an_alarm_in_german_naming_both_digests() -> None:
    shown = rules_json("jena", OURS, "gera", snapshot(OTHER))
    assert shown["same"] is False
    assert shown["text"].startswith("ACHTUNG: Die Leitstellen arbeiten mit unterschiedlichen Routing-Regeln")
    assert f"ZLS jena {OURS[:12]}" in shown["text"] and f"ZLS gera {OTHER[:12]}" in shown["text"]


@pytest.mark.parametrize(
    ("own", "partner"), [(OURS, None), (OURS, snapshot("")), (None, snapshot(OTHER)), (None, None)]
)
def test_unknown_is_never_shown_as_the_same(own: str | None, partner: SiteSnapshot | None) -> None:
    shown = rules_json("jena", own, "gera", partner)
    assert shown["same"] is None
    assert shown["text"] == "Regelstand der ZLS gera unbekannt: kein Vergleich der Routing-Regeln möglich."


@pytest.mark.parametrize(("partner", "value"), [(snapshot(OURS), 1.0), (snapshot(OTHER), 0.0), (None, math.nan)])
def test_the_metrics_an_alert_can_fire_on(partner: SiteSnapshot | None, value: float) -> None:
    registry = prom.CollectorRegistry()
    RulesAgreement(site="jena", partner="gera", own_digest=lambda: OURS, partner_snapshot=lambda: partner,
                   registry=registry)  # fmt: skip
    same = registry.get_sample_value("verbund112_rules_same_as_partner")
    assert same == value or (math.isnan(value) and same is not None and math.isnan(same))
    assert registry.get_sample_value("verbund112_rules_info", {"digest": OURS}) == 1.0


def test_the_service_puts_its_digest_into_its_snapshot_and_status() -> None:
    service = Service(service_settings())
    digest = service.rules.rules.digest  # type: ignore[union-attr]
    assert service._own_snapshot(NOW).rules_digest == digest
    status = service.status()["rules"]
    assert status["digest"] == digest
    assert (status["partner_digest"], status["same"]) == (None, None)  # the partner has not reported
    assert status["last_error"] is None
