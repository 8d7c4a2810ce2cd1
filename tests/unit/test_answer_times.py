"""Answer times by route: from routing to V112Answered; unanswered calls forgotten at their end."""

from __future__ import annotations

import prometheus_client as prom

from routing.decision import Decision, Route
from telephony import events
from verbund112.features.answer_times import FORGET_AFTER_S, AnswerTimes
from verbund112.features.hub import CallRouted


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def routed(call_id: str, route: Route) -> CallRouted:
    decision = Decision(route, "jena", "112-jena", None, "test", None, True, None)
    return CallRouted("jena", call_id, f"u-{call_id}", "+4915112345678", None, "", decision, None)


def answered(call_id: str) -> events.CallAnswered:
    return events.CallAnswered("jena", call_id, f"u-{call_id}", f"u-{call_id}")


def ended(call_id: str) -> events.CallEnded:
    return events.CallEnded("jena", call_id, f"u-{call_id}", f"u-{call_id}", caller_number="+4915112345678",
                            entry_site="jena", entered_at=0.0, ended_at=1.0, answered=False)  # fmt: skip


def setup() -> tuple[AnswerTimes, prom.CollectorRegistry, Clock]:
    registry, clock = prom.CollectorRegistry(), Clock()
    return AnswerTimes(registry, clock), registry, clock


def count(registry: prom.CollectorRegistry, route: str) -> float | None:
    return registry.get_sample_value("verbund112_answer_time_seconds_count", {"route": route})


def test_the_answer_time_is_observed_under_the_route_of_the_decision() -> None:
    times, registry, clock = setup()
    times.on_routed(routed("jena-1", Route.LOCAL))
    times.on_routed(routed("jena-2", Route.PARTNER))
    clock.now += 4.0
    times.on_event(answered("jena-2"))
    clock.now += 8.0
    times.on_event(answered("jena-1"))
    assert (count(registry, "local"), count(registry, "partner"), count(registry, "external")) == (1, 1, 0)
    assert registry.get_sample_value("verbund112_answer_time_seconds_sum", {"route": "local"}) == 12.0
    assert registry.get_sample_value("verbund112_answer_time_seconds_bucket", {"route": "partner", "le": "5.0"}) == 1
    assert registry.get_sample_value("verbund112_calls_routed_total", {"route": "local"}) == 1
    assert times.pending == 0


def test_a_second_answer_and_a_call_not_routed_here_are_not_counted() -> None:
    times, registry, _ = setup()
    times.on_routed(routed("jena-1", Route.LOCAL))
    times.on_event(answered("jena-1"))
    times.on_event(answered("jena-1"))  # the dialplan raises one per answering leg
    times.on_event(answered("gera-7"))  # the partner routed it
    assert count(registry, "local") == 1


def test_an_unanswered_call_is_forgotten_at_its_end_and_a_missed_end_after_an_hour() -> None:
    times, registry, clock = setup()
    times.on_routed(routed("jena-1", Route.LOCAL))
    times.on_routed(routed("jena-2", Route.LOCAL))
    times.on_event(ended("jena-1"))
    assert times.pending == 1
    clock.now += FORGET_AFTER_S + 1
    times.on_routed(routed("jena-3", Route.EXTERNAL))
    assert times.pending == 1  # jena-2's end was missed (AMI cut): forgotten
    times.on_event(answered("jena-2"))
    assert count(registry, "local") == 0
