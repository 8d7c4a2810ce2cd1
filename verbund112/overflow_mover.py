"""The overflow between the two centres: follow the queue, decide, move, confirm.

This site's queue state (overflow.state.QueueView, fed by the service's typed
AMI events) goes into Redis with every heartbeat; the partner's comes back
from there. ``overflow.policy.plan_moves`` decides; a move is one AMI
QueueWithdrawCaller, which Asterisk refuses once the caller is no longer
waiting (so an answered call is never torn away). The dialplan then hands the
caller over the inter-site trunk to the partner's queue at the place their
seniority gives them (``v112-overflow``); the move counts as done when the
partner's snapshot lists the call as arrived. If the partner does not take
the call, the dialplan puts the caller back into the local queue at their old
place. Every move is tried once: nothing is retried or replayed after an AMI
reconnect, the queue state is read afresh instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import prometheus_client as prom

from overflow.policy import DirectionRule, Move, Plan, plan_moves, spare_since
from overflow.state import QueueView, SiteSnapshot, SnapshotError
from telephony import events
from telephony.ami import AmiError
from verbund112 import stores

if TYPE_CHECKING:
    from verbund112.service import Service

log = logging.getLogger(__name__)
ATTEMPT_MEMORY_S = 3600.0


@dataclass
class _InFlight:
    move: Move
    started: float
    partner: str


class OverflowMover:
    def __init__(self, service: Service) -> None:
        self.service = service
        settings = service.settings
        self.site = settings.site
        self.partner_site = settings.partner
        self.view = QueueView(settings.site, settings.partner, settings.queue)
        self.partner: SiteSnapshot | None = None
        self.partner_problem = "no report yet"
        self.last_plan = Plan((), "not planned yet")
        self._partner_spare_since: float | None = None
        self._in_flight: dict[str, _InFlight] = {}
        self._attempted: dict[str, float] = {}  # call id -> when its one move was tried
        self._wake = asyncio.Event()
        self.queue_read = asyncio.Event()  # set once the queue was read after an AMI connect
        self.moves = prom.Counter(
            "verbund112_overflow_moves",
            "overflow moves to the partner by outcome",
            ["outcome"],
            registry=service.metrics.registry,
        )

    # -- inputs ---------------------------------------------------------------

    def snapshot(self, now: float | None = None) -> SiteSnapshot:
        return self.view.snapshot(now or time.time(), self.service.ami.connected.is_set())

    def on_queue_status(self, listed: list[events.DispatcherStateChanged | events.CallerWaiting]) -> None:
        self.view.reset(listed, time.time())
        self.queue_read.set()
        self._wake.set()

    def on_event(self, event: events.SiteEvent) -> None:
        self.view.apply(event, time.time())
        if isinstance(event, events.CallerJoinedQueue) and event.moved and event.call_id in self._in_flight:
            self._finish(event.call_id, "returned", f"{self.partner_site} did not take the call; back in the queue")
        elif (
            isinstance(event, events.ChannelHungUp)
            and (flight := self._in_flight.get(event.call_id)) is not None
            and flight.move.uniqueid == event.uniqueid
        ):
            self._finish(event.call_id, "hung-up", "the caller hung up during the move")
        if isinstance(event, events.CallerJoinedQueue | events.DispatcherStateChanged | events.DispatcherAnswered):
            self._wake.set()

    def note_partner(self, raw: bytes | None, max_age_s: float) -> None:
        """The partner's heartbeat from Redis (None: missing, expired or Redis down)."""
        now = time.time()
        if raw is None:
            self.partner, self.partner_problem = None, "not reporting"
        else:
            try:
                self.partner = SiteSnapshot.from_json(json.loads(raw), now, max_age_s)
                self.partner_problem = ""
            except (SnapshotError, ValueError) as exc:
                self.partner, self.partner_problem = None, str(exc)
        self._partner_spare_since = spare_since(self._partner_spare_since, self.partner, len(self._in_flight), now)
        self._confirm_arrivals(now)
        self._wake.set()

    # -- the loop ---------------------------------------------------------------

    async def run(self) -> None:
        interval = self.service.settings.redis.heartbeat_interval
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._wake.wait()
            self._wake.clear()
            await self.step()

    def rule(self) -> tuple[DirectionRule, float]:
        rules = self.service.rules.rules
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
        now = time.time()
        rule, confirm_within = self.rule()
        for call_id, flight in list(self._in_flight.items()):
            if now - flight.started > confirm_within:
                self._finish(call_id, "unconfirmed", f"not seen at {flight.partner} within {confirm_within:g} s")
        self._attempted = {c: at for c, at in self._attempted.items() if now - at < ATTEMPT_MEMORY_S}
        if not self.service.ami.connected.is_set():
            self.last_plan = Plan((), "this site's AMI is not connected")
            return
        plan = plan_moves(
            self.snapshot(now), self.partner, rule, now=now,
            in_flight=set(self._in_flight), tried=set(self._attempted), partner_spare_since=self._partner_spare_since,
        )  # fmt: skip
        self.last_plan = plan
        for move in plan.moves:
            await self._move(move, now)

    async def _move(self, move: Move, now: float) -> None:
        self._attempted[move.call_id] = now
        self._in_flight[move.call_id] = _InFlight(move, now, self.partner_site)
        # "PPPRRR" for the dialplan (v112-overflow): places in the partner's queue and back here
        info = f"{min(move.partner_position, 999):03d}{min(move.return_position, 999):03d}"
        try:
            await self.service.ami.withdraw_caller(self.view.queue, move.channel, info)
        except AmiError as exc:
            self._finish(move.call_id, "refused", f"Asterisk did not withdraw the caller: {exc}")
            return
        log.info("call %s moved to %s: %s (position %d there)", move.call_id, self.partner_site, move.reason,
                 move.partner_position)  # fmt: skip

    def _confirm_arrivals(self, now: float) -> None:
        if self.partner is None:
            return
        for arrival in self.partner.arrivals:
            if arrival.call_id in self._in_flight and arrival.from_site == self.site:
                self._finish(arrival.call_id, "moved", f"in the queue of {self.partner_site}")

    def _finish(self, call_id: str, outcome: str, detail: str) -> None:
        flight = self._in_flight.pop(call_id, None)
        if flight is None:
            return
        self.moves.labels(outcome).inc()
        (log.info if outcome == "moved" else log.warning)("overflow of call %s: %s (%s)", call_id, outcome, detail)
        entry = {
            "call_id": call_id, "from": self.site, "to": flight.partner, "at": flight.started,
            "outcome": outcome, "reason": flight.move.reason, "detail": detail,
        }  # fmt: skip
        self.service.spawn(self._record(entry))

    async def _record(self, entry: dict[str, object]) -> None:
        try:
            await stores.record_move(self.service.redis, entry, self.service.settings.redis.timeout)
        except stores.StoreError as exc:
            log.warning("overflow move not recorded in Redis: %s", exc)

    def in_flight(self) -> list[str]:
        return list(self._in_flight)
