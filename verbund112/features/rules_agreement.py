"""Whether both sites route by the same rules: this site's digest against the one in the partner's heartbeat.

Each site puts the digest of its rules in force into its snapshot (overflow.state.SiteSnapshot), so
the partner watch brings the partner's. Shown in /api/v1/status and the supervisor view, and
exported for alerting: ``verbund112_rules_same_as_partner`` (1 the same, 0 different, NaN unknown)
and ``verbund112_rules_info{digest}`` (compare across the sites even when the partner is down).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import prometheus_client as prom
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from overflow.state import SiteSnapshot
from overflow.supervision import rules_json


class RulesAgreement:
    def __init__(
        self, *, site: str, partner: str, own_digest: Callable[[], str | None],
        partner_snapshot: Callable[[], SiteSnapshot | None], registry: prom.CollectorRegistry,
    ) -> None:  # fmt: skip
        self._site = site
        self._partner = partner
        self._own_digest = own_digest
        self._partner_snapshot = partner_snapshot
        prom.Gauge("verbund112_rules_same_as_partner", "1: the partner routes by the same rules, 0: by other "
                   "rules, NaN: unknown", registry=registry).set_function(self._same_value)  # fmt: skip
        registry.register(_RulesInfo(own_digest))

    def status(self) -> dict[str, Any]:
        return rules_json(self._site, self._own_digest(), self._partner, self._partner_snapshot())

    def _same_value(self) -> float:
        same = self.status()["same"]
        return math.nan if same is None else float(same)


class _RulesInfo(Collector):
    """The digest of the rules in force as a label, read when scraped (a reload changes it)."""

    def __init__(self, digest: Callable[[], str | None]) -> None:
        self._digest = digest

    def collect(self) -> Iterator[GaugeMetricFamily]:
        info = GaugeMetricFamily("verbund112_rules_info", "the routing rules in force (sha256)", labels=["digest"])
        if digest := self._digest():
            info.add_metric([digest], 1.0)
        yield info
