"""The dispatchers' screens: WebSockets, each with one bounded outbound queue and a writer of its own.

``send`` never waits for a browser: it queues the message for each of the
dispatcher's screens and returns. A screen whose queue overflows (a hung or
slow browser) is closed with a clear reason; the page reconnects and gets its
card again. So a slow screen costs only itself, never another dispatcher's pop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
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
    def __init__(self, site: str, registry: prom.CollectorRegistry, queue_size: int = QUEUE_SIZE) -> None:
        self.site = site
        self.queue_size = queue_size
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

    async def serve(self, request: web.Request, dispatcher: str, cards: CallCards) -> web.WebSocketResponse:
        """One screen of a dispatcher, until it goes away."""
        socket = web.WebSocketResponse(heartbeat=10.0, max_msg_size=4096)
        await socket.prepare(request)
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
