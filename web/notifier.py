"""The dispatchers' screens: WebSockets, each with one bounded outbound queue and a writer of its own.

``send`` never waits for a browser: it queues the message for each of the
dispatcher's screens and returns. A screen whose queue overflows (a hung or
slow browser) is closed with a clear reason; the page reconnects and gets its
card again. So a slow screen costs only itself, never another dispatcher's pop.

A screen that did not come with an Authorization header (a browser cannot set
one) must send ``{"type": "auth", "token": "<the seat's token>"}`` first,
within web.screen_auth_timeout_s; nothing is sent to it before. A dispatcher
has at most web.max_screens_per_dispatcher screens. Refused screens are closed
with code 1008 and a reason, and counted in ``verbund112_screens_refused{reason}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any

import prometheus_client as prom
from aiohttp import WSCloseCode, WSMsgType, web

from verbund112.store import StoreError
from web.ports import CallCards

log = logging.getLogger(__name__)

QUEUE_SIZE = 64  # messages waiting for one screen; a card, its updates and the callback lists fit many times
SEND_TIMEOUT_S = 5.0  # one message to one screen
CLOSE_TIMEOUT_S = 1.0
TOO_SLOW = b"Bildschirm zu langsam: bitte neu verbinden"
STOPPING = b"Dienst wird neu gestartet"
NOT_SIGNED_IN = "Anmeldung fehlt oder ungültig"
NOT_YOURS = "Token gehört nicht zu diesem Platz"
TOO_MANY = "Zu viele Bildschirme für diesen Platz"


class _Screen:
    def __init__(self, dispatcher: str, socket: web.WebSocketResponse, transport: Any, size: int) -> None:
        self.dispatcher = dispatcher
        self.socket = socket
        self.transport = transport
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(size)
        self.closing = False

    async def write(self) -> None:
        """Send queued messages in order; a send that hangs closes this screen only."""
        while True:
            message = await self.queue.get()
            try:
                async with asyncio.timeout(SEND_TIMEOUT_S):
                    await self.socket.send_json(message)
            except (TimeoutError, ConnectionError, RuntimeError) as exc:
                log.warning("screen of dispatcher %s dropped: %s", self.dispatcher, exc or type(exc).__name__)
                await self.close(WSCloseCode.GOING_AWAY, TOO_SLOW)
                return

    async def close(self, code: int, reason: bytes) -> None:
        self.closing = True
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await self.socket.close(code=code, message=reason)
        except (TimeoutError, ConnectionError, RuntimeError):
            # a browser that reads nothing does not read a close frame either
            if self.transport is not None:
                self.transport.abort()


class DispatcherScreens:
    def __init__(
        self, site: str, registry: prom.CollectorRegistry, queue_size: int = QUEUE_SIZE, *,
        max_per_dispatcher: int = 4, auth_timeout: float = 5.0,
    ) -> None:  # fmt: skip
        self.site = site
        self.queue_size = queue_size
        self.max_per_dispatcher = max_per_dispatcher
        self.auth_timeout = auth_timeout
        self.refused = prom.Counter(
            "verbund112_screens_refused", "dispatcher screens refused: not signed in, not theirs, too many",
            ["reason"], registry=registry,
        )  # fmt: skip
        self._screens: dict[str, set[_Screen]] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self.overflowed = prom.Counter(
            "verbund112_screens_too_slow", "dispatcher screens closed because they did not keep up", registry=registry
        )
        prom.Gauge("verbund112_screens", "open dispatcher screens", registry=registry).set_function(
            lambda: float(sum(len(s) for s in self._screens.values()))
        )

    def send(self, dispatcher: str, message: dict[str, Any]) -> int:
        queued = 0
        for screen in list(self._screens.get(dispatcher, ())):
            if self._offer(screen, message):
                queued += 1
        return queued

    def broadcast(self, message: dict[str, Any]) -> None:
        for dispatcher in list(self._screens):
            self.send(dispatcher, message)

    def _offer(self, screen: _Screen, message: dict[str, Any]) -> bool:
        if screen.closing:
            return False
        try:
            screen.queue.put_nowait(message)
            return True
        except asyncio.QueueFull:
            self.overflowed.inc()
            log.warning("screen of dispatcher %s does not keep up (%d messages waiting): closed, it reconnects",
                        screen.dispatcher, screen.queue.qsize())  # fmt: skip
            self._spawn_close(screen, WSCloseCode.TRY_AGAIN_LATER, TOO_SLOW)
            return False

    def _spawn_close(self, screen: _Screen, code: int, reason: bytes) -> None:
        screen.closing = True
        task = asyncio.get_running_loop().create_task(screen.close(code, reason))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def serve(
        self, request: web.Request, dispatcher: str, cards: CallCards,
        seat_of: Callable[[str], str | None] | None = None,
    ) -> web.WebSocketResponse:  # fmt: skip
        """One screen of a dispatcher, until it goes away.

        ``seat_of`` None: the request was authenticated already (a header).
        Otherwise the first message must carry a token whose seat_of is this
        dispatcher.
        """
        socket = web.WebSocketResponse(heartbeat=10.0, max_msg_size=4096)
        await socket.prepare(request)
        if seat_of is not None and (refusal := await self._signed_in(socket, dispatcher, seat_of)):
            return await self._refuse(socket, dispatcher, *refusal)
        if len(self._screens.get(dispatcher, ())) >= self.max_per_dispatcher:
            return await self._refuse(socket, dispatcher, "too-many", TOO_MANY)
        screen = _Screen(dispatcher, socket, request.transport, self.queue_size)
        self._screens.setdefault(dispatcher, set()).add(screen)
        log.info("dispatcher %s connected (%d screens)", dispatcher, len(self._screens[dispatcher]))
        writer = asyncio.get_running_loop().create_task(screen.write(), name=f"screen-{dispatcher}")
        try:
            self._offer(screen, {"type": "hello", "dispatcher": dispatcher, "site": self.site})
            if (card := cards.card_of(dispatcher)) is not None:
                self._offer(screen, card)  # reconnect mid-call: the card again
            with contextlib.suppress(StoreError):
                self._offer(screen, await cards.abandoned_message())
            async for message in socket:
                self._offer(screen, self._answer(message, cards, dispatcher))
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            screens = self._screens.get(dispatcher, set())
            screens.discard(screen)
            if not screens:
                self._screens.pop(dispatcher, None)
        return socket

    async def _signed_in(
        self, socket: web.WebSocketResponse, dispatcher: str, seat_of: Callable[[str], str | None]
    ) -> tuple[str, str] | None:
        """None if the first message is a valid auth for this dispatcher, else why not."""
        try:
            async with asyncio.timeout(self.auth_timeout):
                message = await socket.receive()
        except TimeoutError:
            return "no-auth", NOT_SIGNED_IN
        data = None
        if message.type == WSMsgType.TEXT:
            with contextlib.suppress(ValueError):
                data = json.loads(message.data)
        if not isinstance(data, dict) or data.get("type") != "auth" or not isinstance(data.get("token"), str):
            return "no-auth", NOT_SIGNED_IN
        seat = seat_of(data["token"])
        if seat is None:
            return "bad-token", NOT_SIGNED_IN
        if seat != dispatcher:
            return "not-theirs", NOT_YOURS
        return None

    async def _refuse(
        self, socket: web.WebSocketResponse, dispatcher: str, reason: str, message: str
    ) -> web.WebSocketResponse:
        self.refused.labels(reason).inc()
        log.warning("screen for dispatcher %s refused: %s", dispatcher, reason)
        with contextlib.suppress(TimeoutError, ConnectionError, RuntimeError):
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await socket.close(code=WSCloseCode.POLICY_VIOLATION, message=message.encode())
        return socket

    @staticmethod
    def _answer(message: Any, cards: CallCards, dispatcher: str) -> dict[str, Any]:
        data = None
        if message.type == WSMsgType.TEXT:
            with contextlib.suppress(ValueError):
                data = json.loads(message.data)
        if not isinstance(data, dict) or data.get("type") != "state":
            return {"type": "error", "error": 'send {"type": "state"} or nothing'}
        return {"type": "state", "card": cards.card_of(dispatcher)}

    async def close_all(self) -> None:
        """Service stopping: every screen is told to reconnect (to the restarted service)."""
        screens = [screen for group in self._screens.values() for screen in group]
        await asyncio.gather(*(s.close(WSCloseCode.GOING_AWAY, STOPPING) for s in screens), return_exceptions=True)
        self._screens.clear()
