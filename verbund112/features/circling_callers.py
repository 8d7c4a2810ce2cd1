"""Callers going round between the sites: counted, shown and alarmed on (driver of overflow.circling).

The dialplan reports every round a caller goes (V112Round: neither site took
them) and the answer (V112Answered) or the end (V112CallEnded) of the call;
the pure tracker keeps who is going round. Metrics:
``verbund112_callers_circling`` (how many now), ``..._longest_seconds`` (the
longest since the call entered) and ``..._alarm`` (1 while one has gone round
longer than ``circling.alarm_after_s``). The supervisor view shows them per
centre (each site puts its own into its heartbeat snapshot).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import prometheus_client as prom
from pydantic import BaseModel, ConfigDict, Field

from overflow.circling import Circling, CirclingTracker, CirclingView
from telephony import events

log = logging.getLogger(__name__)

ANSWERED_OR_ENDED = events.CallAnswered | events.CallEnded | events.DispatcherAnswered


class CirclingSettings(BaseModel):
    """Callers going round between the sites (settings section `circling`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    alarm_after_s: float = Field(default=60.0, gt=0, description="alarm when a caller goes round longer than this")
    forget_after_s: float = Field(
        default=300.0, gt=0, description="a caller with no round seen for this long is forgotten (end missed)"
    )


class CirclingCallers:
    def __init__(
        self, settings: CirclingSettings, registry: prom.CollectorRegistry, clock: Callable[[], float] = time.time
    ) -> None:
        self.settings = settings
        self.tracker = CirclingTracker(alarm_after_s=settings.alarm_after_s, forget_after_s=settings.forget_after_s)
        self._clock = clock
        prom.Gauge(
            "verbund112_callers_circling", "callers going round between the sites (in no queue for long)",
            registry=registry,
        ).set_function(lambda: float(len(self.view().callers)))  # fmt: skip
        prom.Gauge(
            "verbund112_callers_circling_longest_seconds",
            "longest time a caller going round has waited since the call entered",
            registry=registry,
        ).set_function(lambda: self.view().longest_s)  # fmt: skip
        prom.Gauge(
            "verbund112_callers_circling_alarm", "1 while a caller has gone round longer than circling.alarm_after_s",
            registry=registry,
        ).set_function(lambda: 1.0 if self.view().alarm else 0.0)  # fmt: skip

    def on_event(self, event: events.SiteEvent) -> None:
        now = self._clock()
        if isinstance(event, events.CallerWentRound):
            if self.tracker.went_round(event.call_id, event.round, event.entered_at, now):
                log.warning("call %s: no dispatcher of either centre took it; going round", event.call_id)
        elif isinstance(event, ANSWERED_OR_ENDED) and self.tracker.done(event.call_id):
            log.info("call %s: no longer going round (%s)", event.call_id, type(event).__name__)
        for lost in self.tracker.expire(now):
            log.warning("call %s: no round seen for %.0f s; no longer counted as going round", lost.call_id,
                        self.settings.forget_after_s)  # fmt: skip

    def reconnected(self) -> None:
        """After an AMI (re)connect: reports may have been missed; those still going round come back."""
        self.tracker.forget_all()

    def view(self, now: float | None = None) -> CirclingView:
        return self.tracker.view(self._clock() if now is None else now)

    def callers(self, now: float) -> tuple[Circling, ...]:
        return self.view(now).callers
