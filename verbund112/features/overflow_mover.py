"""The overflow between the two centres: follow the queue, decide, move, confirm.

A thin driver. This site's queue state (overflow.state.QueueView) follows the
typed AMI events; the partner's snapshot comes from the partner watch.
``overflow.policy.plan_moves`` decides; ``overflow.moves.MoveLedger`` keeps
the moves in flight and their outcomes. A move is one QueueWithdrawCaller over
the QueueControl seam, which Asterisk refuses once the caller is no longer
waiting (so an answered call is never torn away). The dialplan then hands the
caller over the inter-site trunk to the partner's queue at the place their
seniority gives them (``v112-overflow``); the move counts as done when the
partner's snapshot lists the call as arrived. If the partner does not take
the call, the dialplan puts the caller back into the local queue at their old
place. Every move is tried once: nothing is retried or replayed after an AMI
reconnect, the queue state is read afresh instead. Outcomes go to the store
through an outbox, for the supervisor view.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import Protocol

import prometheus_client as prom
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from pydantic import ValidationError

from overflow.moves import OUTCOMES, MoveLedger, MoveOutcome
from overflow.policy import DirectionRule, Move, Plan, plan_moves, spare_since
from overflow.state import DeskState, QueueView, SiteSnapshot
from routing.rules import Rules
from telephony import dialplan, events
from telephony.ami import AmiError
from verbund112.features.supervise import Outbox
from verbund112.store.records import MoveRecord

log = logging.getLogger(__name__)


class QueueControl(Protocol):
    """What the mover needs of Asterisk (telephony.ami.AmiClient)."""

    @property
    def is_connected(self) -> bool: ...

    async def withdraw_caller(self, queue: str, channel: str, info: str) -> None:
        """Raises AmiError when Asterisk refuses."""
        ...


class OverflowMover:
    def __init__(
        self,
        *,
        site: str,
        partner: str,
        queue: str,
        control: QueueControl,
        rules: Callable[[], Rules | None],
        outbox: Outbox[MoveRecord],
        registry: prom.CollectorRegistry,
        interval: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.site = site
        self.partner_site = partner
        self.view = QueueView(site, partner, queue)
        self.ledger = MoveLedger(site, partner)
        self.partner: SiteSnapshot | None = None
        self.last_plan = Plan((), "not planned yet")
        self._control = control
        self._rules = rules
        self._outbox = outbox
        self._interval = interval
        self._clock = clock
        self._partner_spare_since: float | None = None
        self._wake = asyncio.Event()
        self.queue_read = asyncio.Event()  # set once the queue was read after an AMI connect
        self.moves = prom.Counter(
            "verbund112_overflow_moves", "overflow moves to the partner by outcome", ["outcome"], registry=registry
        )
        for outcome in OUTCOMES:
            self.moves.labels(outcome)
        registry.register(_QueueGauges(self.snapshot, clock))

    # -- inputs ---------------------------------------------------------------

    def snapshot(self, now: float | None = None) -> SiteSnapshot:
        return self.view.snapshot(now or self._clock(), self._control.is_connected)

    def on_queue_status(self, listed: list[events.DispatcherStateChanged | events.CallerWaiting]) -> None:
        self.view.reset(listed, self._clock())
        self.queue_read.set()
        self._wake.set()

    def on_event(self, event: events.SiteEvent) -> None:
        self.view.apply(event, self._clock())
        if isinstance(event, events.CallerJoinedQueue) and event.moved:
            self._finished(self.ledger.returned(event.call_id))
        elif isinstance(event, events.ChannelHungUp):
            self._finished(self.ledger.hung_up(event.call_id, event.uniqueid))
        if isinstance(event, events.CallerJoinedQueue | events.DispatcherStateChanged | events.DispatcherAnswered):
            self._wake.set()

    def on_partner(self, partner: SiteSnapshot | None) -> None:
        """The partner's latest snapshot (None: not reporting, stale or malformed)."""
        now = self._clock()
        self.partner = partner
        self._partner_spare_since = spare_since(self._partner_spare_since, partner, len(self.ledger.in_flight), now)
        for outcome in self.ledger.partner_report(partner):
            self._finished(outcome)
        self._wake.set()

    # -- the loop ---------------------------------------------------------------

    async def run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._wake.wait()
            self._wake.clear()
            await self.step()

    def rule(self) -> tuple[DirectionRule, float]:
        rules = self._rules()
        if rules is None:
            return DirectionRule(False, 0, 0, 0), 10.0
        spec = rules.spec.overflow
        own = spec.sites.get(self.site)
        if own is None:
            return DirectionRule(False, 0, 0, spec.partner_spare_for_s), spec.confirm_within_s
        return (
            DirectionRule(own.enabled, own.wait_threshold_s, own.all_busy_after_s, spec.partner_spare_for_s),
            spec.confirm_within_s,
        )

    async def step(self) -> None:
        now = self._clock()
        rule, confirm_within = self.rule()
        for outcome in self.ledger.expire(now, confirm_within):
            self._finished(outcome)
        if not self._control.is_connected:
            self.last_plan = Plan((), "this site's AMI is not connected")
            return
        plan = plan_moves(
            self.snapshot(now), self.partner, rule, now=now,
            in_flight=set(self.ledger.in_flight), tried=set(self.ledger.tried),
            partner_spare_since=self._partner_spare_since,
        )  # fmt: skip
        self.last_plan = plan
        for move in plan.moves:
            await self._move(move, now)

    async def _move(self, move: Move, now: float) -> None:
        self.ledger.start(move, now)
        info = dialplan.withdraw_info(move.partner_position, move.return_position)
        try:
            await self._control.withdraw_caller(self.view.queue, move.channel, info)
        except AmiError as exc:
            self._finished(self.ledger.refused(move.call_id, str(exc)))
            return
        log.info("call %s moved to %s: %s (position %d there)", move.call_id, self.partner_site, move.reason,
                 move.partner_position)  # fmt: skip

    def _finished(self, outcome: MoveOutcome | None) -> None:
        if outcome is None:
            return
        self.moves.labels(outcome.outcome).inc()
        (log.info if outcome.outcome == "moved" else log.warning)(
            "overflow of call %s: %s (%s)", outcome.call_id, outcome.outcome, outcome.detail
        )
        record = {"call_id": outcome.call_id, "from": outcome.from_site, "to": outcome.to_site, "at": outcome.started,
                  "outcome": outcome.outcome, "reason": outcome.reason, "detail": outcome.detail}  # fmt: skip
        try:
            self._outbox.put(MoveRecord.model_validate(record))
        except ValidationError as exc:  # an id Asterisk should never send; the move itself is done
            log.error("overflow move not recorded: %d problems in %s", exc.error_count(), exc.title)

    def in_flight(self) -> list[str]:
        return list(self.ledger.in_flight)


class _QueueGauges(Collector):
    """This site's queue as the mover sees it, read when scraped: callers waiting, the longest wait, desks."""

    def __init__(self, snapshot: Callable[[float], SiteSnapshot], clock: Callable[[], float]) -> None:
        self._snapshot = snapshot
        self._clock = clock

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now = self._clock()
        snapshot = self._snapshot(now)
        yield GaugeMetricFamily("verbund112_callers_waiting", "callers waiting in this site's 112 queue",
                                value=len(snapshot.waiting))  # fmt: skip
        yield GaugeMetricFamily("verbund112_callers_longest_wait_seconds",
                                "how long the caller first in this site's 112 queue has waited (0: none waits)",
                                value=snapshot.longest_wait(now))  # fmt: skip
        desks = GaugeMetricFamily("verbund112_desks", "dispatcher desks of this site's 112 queue, by state",
                                  labels=["state"])  # fmt: skip
        for state in DeskState:
            desks.add_metric([state.value], snapshot.count(state))
        yield desks
