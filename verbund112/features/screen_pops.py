"""Screen pops: the dispatcher who answers a call sees its card, live.

A thin driver over the pure call ledger (call_ledger.py) and card builder
(cards.py). When a dispatcher of this site answers, the card is built from
what this site knows (it routed the call: the ledger has its record) and what
the store has (the entry site's record for a call from the partner, the AML
trail, earlier calls of the number), read in one round trip, and handed to
the screens (a Screens seam: web.notifier queues it for that dispatcher's
WebSockets, and only theirs; nothing here waits for a browser). Only the
answering channel's own call id is marked answered and gets the call's card:
a leg from the partner only claims its id, checked against the store first
(claims.py); a claim that does not hold gets a card of the leg alone, is
logged and counted. AML updates announced by any site reach the dispatcher
holding the call, and changes of the Verbund's callback list reach every
screen (the list itself is filled by abandoned_calls.py from the dialplan's
own report of each call's end). After the store's subscription was lost (a
Redis failover) both are read again from the keys: what was announced
meanwhile is gone. After an AMI (re)connect the calls the dispatchers hold
come again (read with Status, ``recovered``): a restarted service gives each
its card through the same path, and a call whose card the dispatcher has
already is not popped twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

import prometheus_client as prom
from pydantic import ValidationError

from routing.decision import Places
from routing.numbers import NumberError, to_e164
from telephony import events
from verbund112.features import claims
from verbund112.features.call_ledger import CallLedger
from verbund112.features.cards import REPEAT_WINDOW_S, build_card, location_from_aml
from verbund112.features.hub import CallRouted, EventHub
from verbund112.store import AbandonedChanged, AmlUpdated, Announcement, CardData, Resubscribed, StoreError
from verbund112.store.records import AbandonedCall, AmlFixRecord, AnsweredMark, CallRecord, EarlierCall

log = logging.getLogger(__name__)

REPEAT_CALLS_SHOWN = 10
# the events on_event acts on (the hub wakes follow_events for these only)
FOLLOWED = (CallRouted, events.DispatcherAnswered, events.CallCompleted, events.ChannelHungUp)


class PopStore(Protocol):
    """What screen pops need of the store (verbund112.store.Store)."""

    async def answered_card_data(
        self, call_id: str, mark: AnsweredMark, number: str | None, *, need_record: bool, since: float, most: int
    ) -> CardData: ...
    async def aml_and_earlier(
        self, number: str, since: float, most: int
    ) -> tuple[list[AmlFixRecord], list[EarlierCall]]: ...
    async def aml_trail(self, e164: str) -> list[AmlFixRecord]: ...
    async def load_call(self, call_id: str) -> CallRecord | None: ...
    async def abandoned_calls(self) -> list[AbandonedCall]: ...
    async def callback_done(self, call_id: str) -> bool: ...
    def announcements(self) -> AsyncIterator[Announcement]: ...


class Screens(Protocol):
    """Where cards go: the dispatchers' screens (web.notifier.DispatcherScreens)."""

    def send(self, dispatcher: str, message: dict[str, Any]) -> int:
        """Queue a message for the dispatcher's screens; how many screens it was queued for."""
        ...

    def broadcast(self, message: dict[str, Any]) -> None: ...


def e164_or_none(number: str) -> str | None:
    try:
        return to_e164(number)
    except NumberError:
        return None


class ScreenPops:
    def __init__(
        self,
        *,
        site: str,
        partner: str,
        store: PopStore,
        screens: Screens,
        hub: EventHub,
        places: Callable[[], Places | None],
        registry: prom.CollectorRegistry,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.site = site
        self.partner = partner
        self.ledger = CallLedger()
        self._store = store
        self._screens = screens
        self._hub = hub
        self._places = places
        self._clock = clock
        self.pops = prom.Counter(
            "verbund112_screen_pops", "cards pushed to an answering dispatcher, by what the store gave",
            ["data"], registry=registry,
        )  # fmt: skip
        self.claims_refused = prom.Counter(
            "verbund112_intersite_claims_refused",
            "answered calls whose call id did not hold: no card of that call, not marked answered",
            ["reason"], registry=registry,
        )  # fmt: skip
        self.lost_hangups = prom.Counter(
            "verbund112_calls_hangup_missed", "calls whose hangup the service never saw (AMI cut)", registry=registry
        )

    async def follow_events(self) -> None:
        """This site's call events, in order (one card at a time: one store round trip each)."""
        with self._hub.subscribe(kinds=FOLLOWED) as queue:
            while True:
                event = await queue.get()
                try:
                    await self.on_event(event)
                except StoreError as exc:
                    log.warning("screen pop step skipped, Redis: %s", exc)
                except ValidationError as exc:  # a value from AMI that no record takes: skipped, never fatal
                    log.error("screen pop step skipped: %d problems in %s", exc.error_count(), exc.title)

    async def follow_announcements(self) -> None:
        """AML updates and callback-list changes announced by any site."""
        async for announcement in self._store.announcements():
            try:
                if isinstance(announcement, AmlUpdated):
                    await self._aml_update(announcement.number)
                elif isinstance(announcement, AbandonedChanged):
                    self._screens.broadcast(await self.abandoned_message())
                elif isinstance(announcement, Resubscribed):
                    await self._read_again()
            except StoreError as exc:
                log.warning("announcement not handled, Redis: %s", exc)

    async def on_event(self, event: CallRouted | events.SiteEvent) -> None:
        if isinstance(event, CallRouted):
            caller = e164_or_none(event.caller_number) or event.caller_number
            self.ledger.entered(event.uniqueid, event.call_id, caller, self._clock(), event.record)
        elif isinstance(event, events.DispatcherAnswered):
            if event.site == self.site and event.dispatcher and not self._shown(event):
                await self._answered(event)
        elif isinstance(event, events.CallCompleted):
            # a card of a refused claim carries the leg's own id
            for call_id in dict.fromkeys((event.call_id, event.uniqueid)):
                if self.ledger.completed(call_id, event.dispatcher):
                    self._screens.send(event.dispatcher, {"type": "call-ended", "call_id": call_id})
        elif isinstance(event, events.ChannelHungUp):
            await self._hung_up(event)

    # -- answered: the card ---------------------------------------------------------

    def _shown(self, event: events.DispatcherAnswered) -> bool:
        """A call read again after an AMI reconnect whose card the dispatcher has (a refused claim's: the leg's id)."""
        return any(self.ledger.shows(event.dispatcher, call_id) for call_id in (event.call_id, event.uniqueid))

    async def _answered(self, event: events.DispatcherAnswered) -> None:
        now = self._clock()
        try:
            claimed = await self._checked_claim(event)
        except StoreError as exc:
            log.warning("call card of the leg alone: the call id could not be checked (Redis: %s)", exc)
            await self._pop(event, now, None, local_only=True)
            return
        await self._pop(event, now, claimed)

    async def _checked_claim(self, event: events.DispatcherAnswered) -> tuple[str, CallRecord | None] | None:
        """The answering channel's own call id and the record the check read (None: the id did not hold)."""
        record = None
        if claims.is_partner_leg(event.channel):
            record = await self._store.load_call(event.call_id)
            problem = claims.claim_problem(record, partner=self.partner, caller=event.caller_number)
        else:
            problem = claims.local_call_problem(event.call_id, event.uniqueid)
        if problem is None:
            return event.call_id, record
        self.claims_refused.labels(problem.value).inc()
        log.warning("call id %s of %s refused (%s): card of the leg alone, not marked answered",
                    event.call_id, event.channel, problem.value)  # fmt: skip
        return None

    async def _pop(
        self, event: events.DispatcherAnswered, now: float, claimed: tuple[str, CallRecord | None] | None,
        *, local_only: bool = False,
    ) -> None:  # fmt: skip
        """The card; with a call id that held, the call's (and the call is marked answered), else the leg's."""
        call_id, known = claimed if claimed is not None else (event.uniqueid, None)
        if claimed is not None:
            self.ledger.answered(call_id)
            known = known or self.ledger.record_of(call_id)
        number = e164_or_none(known.caller if known is not None else event.caller_number)
        data, source = CardData(None, [], []), "local-only"
        if claimed is not None and not local_only:
            try:
                data, number = await self._card_data(call_id, event, known, number, now)
                source = "store"
            except StoreError as exc:
                # the card still goes out, with what this site knows itself
                log.warning("call card without the store's data (Redis: %s)", exc)
        self.pops.labels(source).inc()
        record = known or data.record
        card = build_card(
            call_id=call_id, answered_site=event.site, dispatcher=event.dispatcher,
            caller_number=number or event.caller_number, from_site=event.from_site, wait_s=event.hold_time,
            record=None if record is None else record.as_dict(), aml_trail=[f.as_dict() for f in data.aml_trail],
            earlier_calls=[c.as_dict() for c in data.earlier_calls], now=now, places=self._places(),
        )  # fmt: skip
        card["answered_at"] = event.answered_at or now
        self.ledger.show(event.dispatcher, card)
        sent = self._screens.send(event.dispatcher, card)
        log.info("call card pushed to dispatcher %s (%d screens)", event.dispatcher, sent)

    async def _card_data(
        self, call_id: str, event: events.DispatcherAnswered, known: CallRecord | None, number: str | None, now: float
    ) -> tuple[CardData, str | None]:
        """Mark the (checked) call answered and read its card's data; and the number the card is about."""
        data = await self._store.answered_card_data(
            call_id, AnsweredMark(site=event.site, dispatcher=event.dispatcher, at=now), number,
            need_record=known is None, since=now - REPEAT_WINDOW_S, most=REPEAT_CALLS_SHOWN + 1,
        )  # fmt: skip
        if known is None and data.record is not None and (other := e164_or_none(data.record.caller)) != number:
            # the entry site knew the number better than the channel (rare): its trail and calls
            trail, earlier = ([], []) if other is None else await self._store.aml_and_earlier(
                other, now - REPEAT_WINDOW_S, REPEAT_CALLS_SHOWN + 1)  # fmt: skip
            return CardData(data.record, trail, earlier), other
        return data, number

    # -- hung up: the call leaves the ledger ------------------------------------------

    async def _hung_up(self, event: events.ChannelHungUp) -> None:
        for lost in self.ledger.expire(self._clock()):
            self.lost_hangups.inc()
            log.warning("call %s: no hangup seen within %.0f h; forgotten", lost.call_id, self.ledger.max_age_s / 3600)
        self.ledger.hung_up(event.uniqueid)

    # -- what the screens ask for ---------------------------------------------------

    def card_of(self, dispatcher: str) -> dict[str, Any] | None:
        return self.ledger.card_of(dispatcher)

    async def abandoned_message(self) -> dict[str, Any]:
        calls = await self._store.abandoned_calls()
        return {"type": "abandoned", "calls": [c.as_dict() for c in calls]}

    async def callback_done(self, call_id: str) -> bool:
        return await self._store.callback_done(call_id)

    async def _aml_update(self, number: str, *, only_newer: bool = False) -> None:
        """The number's newest fix to the dispatchers holding a call from it (only_newer: unless
        their card shows that fix or a newer one already)."""
        holders = self.ledger.holders(number)
        if not holders:
            return
        trail = await self._store.aml_trail(number)
        if not trail:
            return
        now = self._clock()
        location = location_from_aml(trail[0].as_dict(), now, self._places())
        for dispatcher in holders:
            if only_newer and not self.ledger.is_newer_aml(dispatcher, trail[0].time):
                continue
            card = self.ledger.new_location(dispatcher, location)
            self._screens.send(dispatcher, {"type": "location", "call_id": card["call_id"], "location": location})

    async def _read_again(self) -> None:
        """After a (re)subscription: the AML trails of the calls held here and the callback list."""
        for number in self.ledger.held_numbers():
            await self._aml_update(number, only_newer=True)
        self._screens.broadcast(await self.abandoned_message())
