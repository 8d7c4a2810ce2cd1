"""How long 112 callers wait for a dispatcher: the answer time of each call this site routed, by route.

The clock starts when this site's routing answered for the call (CallRouted, a
few milliseconds after the call entered) and stops at the dialplan's
V112Answered, which the entry site raises whoever answers (a dispatcher here,
or the partner's over the inter-site trunk). A call that ends unanswered is
forgotten at its V112CallEnded (it counts as abandoned elsewhere). The route is
the routing decision (local, partner, external); a call the external Leitstelle
answers raises no V112Answered, so that route's histogram only counts callers
who came back to a dispatcher of the Verbund. Calls the dialplan routed without
the service (FastAGI fallback) are not measured: their start is unknown here.

Metrics: ``verbund112_calls_routed_total{route}`` and the histogram
``verbund112_answer_time_seconds{route}`` (NFPA 1225: 90 % within 10 s).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass

import prometheus_client as prom

from routing.decision import Route
from telephony import events
from verbund112.features.hub import CallRouted

# a call not answered nor ended for this long was missed (AMI cut): forgotten, so memory stays bounded
FORGET_AFTER_S = 3600.0
ANSWER_TIME_BUCKETS = (1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 300.0)


@dataclass(frozen=True, slots=True)
class _Routed:
    route: str
    at: float


class AnswerTimes:
    def __init__(self, registry: prom.CollectorRegistry, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._calls: dict[str, _Routed] = {}  # by call id, in the order they were routed
        self.routed = prom.Counter(
            "verbund112_calls_routed", "112 calls this site's service routed, by route", ["route"], registry=registry
        )
        self.seconds = prom.Histogram(
            "verbund112_answer_time_seconds", "from routing to a dispatcher's answer, calls routed here, by route",
            ["route"], buckets=ANSWER_TIME_BUCKETS, registry=registry,
        )  # fmt: skip
        # each route's children looked up once (labels() takes a lock and checks its values)
        self._routed = functools.cache(self.routed.labels)
        self._seconds = functools.cache(self.seconds.labels)
        for route in Route:  # every route shown from the start, so rates and quantiles have series
            self._routed(route.value)
            self._seconds(route.value)

    def on_routed(self, event: CallRouted) -> None:
        now = self._clock()
        route = event.decision.route.value
        self._routed(route).inc()
        self._calls.setdefault(event.call_id, _Routed(route, now))  # a repeated question keeps the first start
        self._forget_older_than(now - FORGET_AFTER_S)

    def on_event(self, event: events.SiteEvent) -> None:
        if isinstance(event, events.CallAnswered):
            if (routed := self._calls.pop(event.call_id, None)) is not None:
                self._seconds(routed.route).observe(max(0.0, self._clock() - routed.at))
        elif isinstance(event, events.CallEnded):
            self._calls.pop(event.call_id, None)

    @property
    def pending(self) -> int:
        """Calls routed here and neither answered nor ended yet."""
        return len(self._calls)

    def _forget_older_than(self, cutoff: float) -> None:
        while self._calls:
            call_id, routed = next(iter(self._calls.items()))
            if routed.at >= cutoff:
                return
            del self._calls[call_id]
