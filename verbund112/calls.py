"""Screen pops: the dispatcher who answers a call sees its card, live.

The tracker follows this site's typed call events. When a dispatcher of this
site answers, it builds the card from what the Verbund knows (the entry
site's call record in Redis, the AML trail, earlier calls of the number) and
pushes it to that dispatcher's WebSockets, and to no one else. AML updates
announced on Redis by any site's intake reach the dispatcher holding the call
within the second. Calls that entered here and ended before any dispatcher of
either site answered go onto the Verbund's abandoned-call list.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
from aiohttp import WSCloseCode, web

from routing.decision import Places
from routing.numbers import NumberError, to_e164
from telephony import events
from verbund112 import stores
from verbund112.cards import REPEAT_WINDOW_S, build_card, location_from_aml

if TYPE_CHECKING:
    from verbund112.service import CallRouted, Service

log = logging.getLogger(__name__)
SEND_TIMEOUT_S = 1.0


@dataclass
class _Entry:
    """A call that entered at this site, until it ends."""

    call_id: str
    caller: str
    at: float
    answered: bool = False


@dataclass
class Pops:
    """Open WebSockets per dispatcher, and each dispatcher's current card."""

    sockets: dict[str, set[web.WebSocketResponse]] = field(default_factory=dict)
    cards: dict[str, dict[str, Any]] = field(default_factory=dict)

    async def send(self, dispatcher: str, message: dict[str, Any]) -> int:
        sent = 0
        for socket in list(self.sockets.get(dispatcher, ())):
            try:
                async with asyncio.timeout(SEND_TIMEOUT_S):
                    await socket.send_json(message)
                sent += 1
            except (TimeoutError, ConnectionError, RuntimeError) as exc:
                log.warning("WebSocket of dispatcher %s dropped: %s", dispatcher, exc or type(exc).__name__)
                self.sockets[dispatcher].discard(socket)
        return sent

    async def close_all(self) -> None:
        """Service stopping: every screen is told to reconnect (to the restarted service)."""
        for sockets in self.sockets.values():
            for socket in list(sockets):
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(SEND_TIMEOUT_S):
                        await socket.close(code=WSCloseCode.GOING_AWAY, message=b"service stopping")
        self.sockets.clear()

    async def broadcast(self, message: dict[str, Any]) -> None:
        for dispatcher in list(self.sockets):
            await self.send(dispatcher, message)


class CallTracker:
    def __init__(self, service: Service) -> None:
        self.service = service
        self.pops = Pops()
        self._entries: dict[str, _Entry] = {}  # by the entry channel's Uniqueid
        self._answered_here: set[str] = set()

    @property
    def _redis(self) -> aioredis.Redis:
        return self.service.redis

    @property
    def _within(self) -> float:
        return self.service.settings.redis.timeout

    def _places(self) -> Places | None:
        """District and centre lookups with the rules in force (none loaded: cards without them)."""
        rules = self.service.rules.rules
        return None if rules is None else Places(rules)

    async def run(self) -> None:
        """Follow the service's events and the Verbund's Redis announcements."""
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._follow_events())
            tasks.create_task(self._follow_redis())

    async def _follow_events(self) -> None:
        from verbund112.service import CallRouted

        with self.service.hub.subscribe() as queue:
            while True:
                event = await queue.get()
                try:
                    if isinstance(event, CallRouted):
                        self._entered(event)
                    elif isinstance(event, events.DispatcherAnswered):
                        await self._answered(event)
                    elif isinstance(event, events.CallCompleted):
                        await self._completed(event)
                    elif isinstance(event, events.ChannelHungUp):
                        await self._hung_up(event)
                except stores.StoreError as exc:
                    log.warning("screen pop step skipped, Redis: %s", exc)

    def _entered(self, routed: CallRouted) -> None:
        try:
            caller = to_e164(routed.caller_number)
        except NumberError:
            caller = routed.caller_number
        self._entries[routed.uniqueid] = _Entry(routed.call_id, caller, time.time())

    async def _answered(self, event: events.DispatcherAnswered) -> None:
        if event.site != self.service.settings.site or not event.dispatcher:
            return
        self._answered_here.add(event.call_id)
        await stores.mark_answered(self._redis, event.call_id, event.site, event.dispatcher, self._within)
        card = await self._card(event)
        self.pops.cards[event.dispatcher] = card
        sent = await self.pops.send(event.dispatcher, card)
        log.info("call card for %s pushed to dispatcher %s (%d screens)", event.call_id, event.dispatcher, sent)

    async def _card(self, event: events.DispatcherAnswered) -> dict[str, Any]:
        now = time.time()
        record = await stores.load_call(self._redis, event.call_id, self._within)
        number = (record or {}).get("caller") or event.caller_number
        trail: list[dict[str, Any]] = []
        earlier: list[dict[str, Any]] = []
        with contextlib.suppress(NumberError):
            number = to_e164(number)
            trail = await stores.aml_trail(self._redis, number, self._within)
            earlier = await stores.earlier_calls(self._redis, number, now - REPEAT_WINDOW_S, self._within)
        card = build_card(
            call_id=event.call_id, answered_site=event.site, dispatcher=event.dispatcher, caller_number=number,
            from_site=event.from_site, wait_s=event.hold_time, record=record, aml_trail=trail,
            earlier_calls=earlier, now=now, places=self._places(),
        )  # fmt: skip
        card["answered_at"] = event.answered_at or now
        return card

    async def _completed(self, event: events.CallCompleted) -> None:
        card = self.pops.cards.get(event.dispatcher)
        if card is not None and card["call_id"] == event.call_id:
            del self.pops.cards[event.dispatcher]
            await self.pops.send(event.dispatcher, {"type": "call-ended", "call_id": event.call_id})

    async def _hung_up(self, event: events.ChannelHungUp) -> None:
        entry = self._entries.pop(event.uniqueid, None)
        if entry is None:
            return
        if entry.call_id in self._answered_here:
            self._answered_here.discard(entry.call_id)
            return
        if await stores.was_answered(self._redis, entry.call_id, self._within):
            return
        await stores.add_abandoned(
            self._redis,
            {"call_id": entry.call_id, "caller": entry.caller, "site": self.service.settings.site, "at": time.time(),
             "waited_s": round(time.time() - entry.at)},
            self._within,
        )  # fmt: skip
        log.info("call %s abandoned before an answer: on the callback list", entry.call_id)

    # -- announcements from any site ------------------------------------------

    async def _follow_redis(self) -> None:
        delay = 0.2
        while True:
            try:
                await self._listen()
            except (OSError, aioredis.RedisError, TimeoutError) as exc:
                if stores.being_cancelled():
                    raise asyncio.CancelledError from exc
                log.warning("Redis announcements lost (%s); listening again in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _listen(self) -> None:
        pubsub = self._redis.pubsub()
        try:
            await self._relay(pubsub)
        finally:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _relay(self, pubsub: Any) -> None:
        await pubsub.subscribe(stores.AML_UPDATES_CHANNEL, stores.ABANDONED_CHANNEL)
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if stores.being_cancelled():  # redis-py may swallow the cancellation and return None
                raise asyncio.CancelledError
            if message is None:
                continue
            channel = message["channel"].decode()
            try:
                if channel == stores.AML_UPDATES_CHANNEL:
                    await self._aml_update(message["data"].decode())
                else:
                    await self.pops.broadcast(await self.abandoned_message())
            except stores.StoreError as exc:
                log.warning("announcement not handled, Redis: %s", exc)

    async def _aml_update(self, number: str) -> None:
        holders = [d for d, card in self.pops.cards.items() if card.get("caller") == number]
        if not holders:
            return
        trail = await stores.aml_trail(self._redis, number, self._within)
        if not trail:
            return
        location = location_from_aml(trail[0], time.time(), self._places())
        for dispatcher in holders:
            card = self.pops.cards[dispatcher]
            card["locations"] = [location, *(loc for loc in card["locations"] if loc["source"] != "aml")]
            await self.pops.send(dispatcher, {"type": "location", "call_id": card["call_id"], "location": location})

    async def abandoned_message(self) -> dict[str, Any]:
        return {"type": "abandoned", "calls": await stores.abandoned_calls(self._redis, self._within)}

    # -- WebSockets -------------------------------------------------------------

    async def serve_socket(self, request: web.Request, dispatcher: str) -> web.WebSocketResponse:
        socket = web.WebSocketResponse(heartbeat=10.0, max_msg_size=4096)
        await socket.prepare(request)
        self.pops.sockets.setdefault(dispatcher, set()).add(socket)
        log.info("dispatcher %s connected (%d screens)", dispatcher, len(self.pops.sockets[dispatcher]))
        try:
            await socket.send_json({"type": "hello", "dispatcher": dispatcher, "site": self.service.settings.site})
            if (card := self.pops.cards.get(dispatcher)) is not None:
                await socket.send_json(card)  # reconnect mid-call: the card again
            with contextlib.suppress(stores.StoreError):
                await socket.send_json(await self.abandoned_message())
            async for message in socket:
                await self._client_message(socket, dispatcher, message)
        except ConnectionError as exc:  # the screen went away mid-send: it reconnects and gets the card again
            log.info("dispatcher %s disconnected: %s", dispatcher, exc)
        finally:
            self.pops.sockets.get(dispatcher, set()).discard(socket)
        return socket

    async def _client_message(self, socket: web.WebSocketResponse, dispatcher: str, message: Any) -> None:
        try:
            data = json.loads(message.data) if isinstance(message.data, str) else None
        except ValueError:
            data = None
        if not isinstance(data, dict) or data.get("type") != "state":
            await socket.send_json({"type": "error", "error": 'send {"type": "state"} or nothing'})
            return
        await socket.send_json({"type": "state", "card": self.pops.cards.get(dispatcher)})
