"""Which metrics the service exports, and which ones a PromQL expression reads (alerts, dashboard)."""

from __future__ import annotations

import re

import prometheus_client as prom

# series Prometheus makes itself for every scrape target
PROMETHEUS_OWN = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_VARIABLE = re.compile(r"\$\{?\w+\}?")  # Grafana's $site, ${site}, $__rate_interval
_DURATION_OR_NUMBER = re.compile(r"\b\d[\w.]*")
# Grafana's label_values(selector, label): its last argument is a label
_LABEL_VALUES_LABEL = re.compile(r"^\s*(label_values\(.*),\s*\w+\s*\)\s*$", re.S)
_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_KEYWORDS = frozenset({"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
                       "offset", "bool", "inf", "nan", "atan2"})  # fmt: skip


def promql_metric_names(expr: str) -> set[str]:
    """The metric names an expression selects: strings, label matchers, label lists, ranges,
    variables and numbers stripped; what is left and is not a function, aggregation or keyword."""
    text = _STRING.sub(" ", expr)
    text = _VARIABLE.sub(" ", text)
    text = _LABEL_LIST.sub(" ", text)
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _LABEL_VALUES_LABEL.sub(r"\1)", text)
    text = _DURATION_OR_NUMBER.sub(" ", text)
    names = set()
    for found in _NAME.finditer(text):
        name, rest = found.group(), text[found.end() :].lstrip()
        if rest.startswith("(") or name.lower() in _KEYWORDS:
            continue  # a function or aggregation, or an operator word
        names.add(name)
    return names


def service_registry() -> prom.CollectorRegistry:
    """The metrics of a service as the app builds them: the service's registry plus the web edge's
    connection metrics (made when it serves). Nothing is started."""
    from tests.unit.test_fastagi import service_settings
    from verbund112.service import Service
    from web.limits import ConnectionGuard

    service = Service(service_settings())
    ConnectionGuard(service.settings.web, service.registry)
    return service.registry


def exported_metric_names() -> set[str]:
    """Every sample name a service exports (counters with _total, histograms with _bucket ...)."""
    registry = service_registry()
    names = set()
    for family in registry.collect():
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
    for family in _families_without_samples(registry):
        names.update(family)
    return names


def _families_without_samples(registry: prom.CollectorRegistry) -> list[set[str]]:
    """A labelled metric with no label values yet exports no samples: its names as they will be."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "summary": ("_count", "_sum"),
                "gauge": ("",), "info": ("_info",)}  # fmt: skip
    return [{family.name + suffix for suffix in suffixes.get(family.type, ("",))}
            for family in registry.collect() if not family.samples]  # fmt: skip
