"""The alert rules and the Grafana dashboard an operator runs: checked and tested with promtool, and every
metric they read is one the service exports (a renamed metric must not leave a silent alert behind)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.metric_names import PROMETHEUS_OWN, exported_metric_names, promql_metric_names, service_registry

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
ALERTS = DEPLOY / "prometheus" / "alerts.yaml"
ALERTS_TEST = DEPLOY / "prometheus" / "alerts_test.yaml"
DASHBOARD = DEPLOY / "grafana" / "verbund112.json"


@pytest.fixture(scope="module")
def exported() -> set[str]:
    return exported_metric_names() | PROMETHEUS_OWN


def promtool(*args: str) -> None:
    tool = shutil.which("promtool")
    assert tool is not None, "promtool not installed (Debian package prometheus; scripts/bootstrap installs it)"
    done = subprocess.run([tool, *args], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, f"promtool {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"


def test_promtool_checks_the_alert_rules() -> None:
    promtool("check", "rules", str(ALERTS))


def test_promtool_tests_the_alert_rules() -> None:
    promtool("test", "rules", str(ALERTS_TEST))


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


def test_every_alert_reads_metrics_the_service_exports(exported: set[str]) -> None:
    for rule in alert_rules():
        names = promql_metric_names(rule["expr"])
        assert names, rule["alert"]
        assert names <= exported, f"{rule['alert']} reads {sorted(names - exported)}, which the service does not export"


def test_every_alert_is_tested_and_speaks_german_to_the_operators() -> None:
    tested = {check["alertname"] for test in yaml.safe_load(ALERTS_TEST.read_text())["tests"]
              for check in test["alert_rule_test"] if check["exp_alerts"]}  # fmt: skip
    for rule in alert_rules():
        assert rule["alert"] in tested, f"{rule['alert']} has no promtool test where it fires"
        assert {"summary", "description", "runbook"} <= rule["annotations"].keys(), rule["alert"]
        assert "{{ $labels.site }}" in rule["annotations"]["summary"], rule["alert"]
        assert rule["labels"]["severity"] in ("critical", "warning")


def dashboard_expressions(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    found = []
    for panel in dashboard["panels"]:
        for inner in [panel, *panel.get("panels", [])]:
            found += [(inner["title"], target["expr"]) for target in inner.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            found.append((variable["name"], variable["query"]["query"]))
    return found


def test_every_dashboard_expression_reads_metrics_the_service_exports(exported: set[str]) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = dashboard_expressions(dashboard)
    assert len(expressions) >= 20
    for title, expr in expressions:
        names = promql_metric_names(expr)
        assert names, f"{title}: {expr}"
        assert names <= exported, f"{title}: {sorted(names - exported)} not exported by the service"


def test_the_dashboard_shows_both_centres_side_by_side_and_what_an_operator_watches() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    site = next(v for v in dashboard["templating"]["list"] if v["name"] == "site")
    assert site["multi"] and site["includeAll"]
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert all(p["repeat"] == "site" and p["repeatDirection"] == "h" and p["maxPerRow"] == 2 for p in panels)
    read = set().union(*(promql_metric_names(expr) for _, expr in dashboard_expressions(dashboard)))
    assert {
        "verbund112_callers_waiting", "verbund112_callers_longest_wait_seconds", "verbund112_desks",
        "verbund112_answer_time_seconds_bucket", "verbund112_abandoned_calls_total",
        "verbund112_overflow_moves_total", "verbund112_partner_up", "verbund112_redis_master_info",
        "verbund112_fastagi_requests_total",
    } <= read  # fmt: skip


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('up{job="verbund112"} == 0', {"up"}),
        ("histogram_quantile(0.9, sum by (job, le) (rate(a_seconds_bucket[15m]))) > 10", {"a_seconds_bucket"}),
        ('sum without (x) (increase(b_total{o=~"f|l", s="$site"}[$__rate_interval])) or c > 1', {"b_total", "c"}),
        ("a / on (site) group_left (address) b_info offset 5m", {"a", "b_info"}),
        ('label_values(up{job="verbund112"}, site)', {"up"}),
        ('x{l="sum(y)"} and bool_gauge', {"x", "bool_gauge"}),
    ],
)
def test_metric_names_are_parsed_out_of_promql(expr: str, names: set[str]) -> None:
    assert promql_metric_names(expr) == names


def test_every_metric_of_the_service_is_documented() -> None:
    reference = (DEPLOY.parent / "docs" / "metrics.md").read_text()
    suffix = {"counter": "_total", "info": "_info"}
    names = [family.name + suffix.get(family.type, "") for family in service_registry().collect()]
    assert [name for name in names if f"`{name}`" not in reference] == []


def test_the_series_the_alerts_count_exist_from_the_start_so_the_first_event_counts() -> None:
    registry = service_registry()
    for name, labels in [
        ("verbund112_fastagi_requests_total", {"outcome": "fallback"}),
        ("verbund112_fastagi_requests_total", {"outcome": "late"}),
        ("verbund112_aml_messages_total", {"format": "https", "outcome": "unavailable"}),
        ("verbund112_aml_messages_total", {"format": "sms-v1", "outcome": "refused"}),
        ("verbund112_aml_signatures_refused_total", {"reason": "bad-signature"}),
        ("verbund112_answer_time_seconds_count", {"route": "local"}),
        ("verbund112_desks", {"state": "available"}),
    ]:
        assert registry.get_sample_value(name, labels) == 0, (name, labels)
