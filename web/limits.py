"""Limits of the HTTP listener: it shares the process (and the event loop) with FastAGI.

A flood of connections, or clients that send their request head byte by byte
(slowloris), must not use up the file descriptors and the loop that answer
Asterisk. aiohttp has no cap on connections and no deadline for a request head
(its keep-alive timeout is meant for idle clients), so the listener wraps each
connection's protocol:

- at most ``web.max_connections`` open at once; one more gets
  ``503`` and is closed before aiohttp sees it;
- a connection that is not in a request must send a complete request head
  within ``web.request_head_timeout_s`` (from its start, and again after each
  response); otherwise it is closed. A WebSocket is in its request for its
  whole life (bounded by ``web.max_screens_per_dispatcher``, web.notifier);
- a request body must arrive within ``web.request_body_timeout_s`` (read_body).

Each close is counted in ``verbund112_web_connections_closed{limit}``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import cast

import prometheus_client as prom
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from web.ports import PORTS
from web.settings import WebSettings

log = logging.getLogger(__name__)

REFUSED = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
CLOSED: web.AppKey[prom.Counter] = web.AppKey("connections_closed", prom.Counter)


class ConnectionGuard:
    """Counts the open connections and keeps the request-head deadline of each."""

    def __init__(self, settings: WebSettings, registry: prom.CollectorRegistry) -> None:
        self.max_connections = settings.max_connections
        self.head_timeout = settings.request_head_timeout_s
        self._open: dict[asyncio.BaseTransport, _Connection] = {}
        self.closed = prom.Counter(
            "verbund112_web_connections_closed", "HTTP connections refused or closed by a limit", ["limit"],
            registry=registry,
        )  # fmt: skip
        prom.Gauge("verbund112_web_connections", "open HTTP and WebSocket connections", registry=registry).set_function(
            lambda: float(len(self._open))
        )

    def protocol_factory(self, make: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        return lambda: _Connection(make(), self)

    def _admit(self, connection: _Connection, transport: asyncio.BaseTransport) -> bool:
        if len(self._open) >= self.max_connections:
            self.closed.labels("max-connections").inc()
            log.warning("HTTP connection from %s refused: %d open, the limit", _peer(transport), len(self._open))
            return False
        self._open[transport] = connection
        return True

    def _left(self, transport: asyncio.BaseTransport) -> None:
        self._open.pop(transport, None)

    def middleware(self) -> Middleware:
        """Marks a connection as in a request (no head deadline) while its handler runs."""

        @web.middleware
        async def in_request(request: web.Request, handler: Handler) -> web.StreamResponse:
            connection = self._open.get(request.transport) if request.transport is not None else None
            if connection is None:
                return await handler(request)
            connection.request_started()
            try:
                return await handler(request)
            finally:
                connection.request_ended()

        return in_request


class _Connection(asyncio.Protocol):
    """aiohttp's protocol for one connection, behind the guard."""

    def __init__(self, inner: asyncio.Protocol, guard: ConnectionGuard) -> None:
        self._inner = inner
        self._guard = guard
        self._transport: asyncio.Transport | None = None
        self._in_requests = 0
        self._bytes_waiting = False  # bytes came since the connection or the last request began
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a TCP stream transport: asyncio's, or uvloop's (which does not subclass asyncio.Transport)
        transport = cast(asyncio.Transport, transport)
        if not self._guard._admit(self, transport):
            transport.write(REFUSED)
            transport.close()
            return
        self._transport = transport
        self._arm()
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._transport is None:
            return
        if self._in_requests == 0:
            self._bytes_waiting = True
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return None if self._transport is None else self._inner.eof_received()

    def pause_writing(self) -> None:
        if self._transport is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._transport is not None:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is None:
            return
        self._disarm()
        self._guard._left(self._transport)
        self._inner.connection_lost(exc)

    def request_started(self) -> None:
        self._in_requests += 1
        self._bytes_waiting = False
        self._disarm()

    def request_ended(self) -> None:
        self._in_requests -= 1
        if self._in_requests == 0:
            self._arm()

    def _arm(self) -> None:
        self._disarm()
        self._deadline = asyncio.get_running_loop().call_later(self._guard.head_timeout, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        transport = self._transport
        if transport is None or self._in_requests or transport.is_closing():
            return
        if transport.get_write_buffer_size():
            self._arm()  # still sending the last response to a slow reader
            return
        limit = "request-head-timeout" if self._bytes_waiting else "idle"
        self._guard.closed.labels(limit).inc()
        if self._bytes_waiting:
            log.warning("HTTP connection from %s closed: no complete request head within %g s",
                        _peer(transport), self._guard.head_timeout)  # fmt: skip
        transport.abort()


def _peer(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, tuple) else "?"


class GuardedSite(web.TCPSite):
    """A TCP site whose connections go through a ConnectionGuard."""

    def __init__(self, runner: web.AppRunner, host: str, port: int, guard: ConnectionGuard) -> None:
        super().__init__(runner, host, port)
        self._guard = guard

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site; TCPSite.start would listen unguarded
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            self._guard.protocol_factory(server), self._host, self._port, backlog=self._backlog
        )


async def read_body(request: web.Request, limit: int) -> bytes:
    """The request body, at most ``limit`` bytes, within web.request_body_timeout_s (else 413 or 408)."""
    if (request.content_length or 0) > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length or 0)
    within = request.app[PORTS].web.request_body_timeout_s
    try:
        async with asyncio.timeout(within):
            body = await request.read()
    except TimeoutError:
        request.app[CLOSED].labels("request-body-timeout").inc()
        log.warning("HTTP %s %s from %s: the body did not come within %g s", request.method, request.path,
                    request.remote, within)  # fmt: skip
        raise web.HTTPRequestTimeout(reason=f"the request body did not come within {within:g} s") from None
    if len(body) > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=len(body))
    return body
