"""FastAGI server that answers every request within its deadline, always.

Asterisk waits forever on a FastAGI server that accepted a connection and
then says nothing (the dialplan's TIMEOUT(absolute) net catches that too, but
only after seconds). So each connection gets one hard deadline for the whole
exchange: read the request, ask the handler, send its commands. A handler that
is slow or fails is replaced by the fallback reply (the local queue); a peer
that sends garbage or nothing is logged and dropped; nothing a peer does can
stall the server or another call.

panoramisk's FastAGI ``Application`` is not used: it reads the request in a
loop that spins forever on an early EOF and has no timeout anywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger(__name__)

_RESULT = re.compile(r"^(?P<code>\d{3})[ -](?:result=(?P<result>-?\d+)(?: \((?P<data>.*)\))?)?(?P<rest>.*)$")
_VARIABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


class FastAgiSettings(BaseModel):
    """The FastAGI server Asterisk asks where a 112 call goes (settings section `fastagi`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=4573, ge=0, le=65535)
    deadline: float = Field(
        default=0.5,
        gt=0,
        description="whole exchange per request, seconds; keep well under the dialplan's agi_deadline_s",
    )
    max_header_bytes: int = Field(default=16384, gt=0)


class AgiProtocolError(Exception):
    """The peer broke the AGI protocol (garbage, EOF, a refused command)."""


@dataclass(frozen=True, slots=True)
class AgiRequest:
    """What Asterisk told us when it connected (the agi_* variables)."""

    script: str
    arguments: tuple[str, ...]
    channel: str
    uniqueid: str
    caller_number: str
    context: str
    extension: str
    headers: Mapping[str, str] = field(repr=False)


@dataclass(frozen=True, slots=True)
class AgiReply:
    """Channel variables to set, in order."""

    variables: tuple[tuple[str, str], ...]

    def __post_init__(self) -> None:
        for name, value in self.variables:
            if not _VARIABLE_NAME.match(name):
                raise ValueError(f"invalid channel variable name {name!r}")
            if any(ch in value for ch in '\r\n"'):
                raise ValueError(f"invalid value for {name}")


class AgiSession:
    """Commands on one connection; every read is bounded by the request deadline."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: AgiRequest) -> None:
        self._reader = reader
        self._writer = writer
        self.request = request

    async def command(self, line: str) -> tuple[int, str]:
        """Send one AGI command; returns (result, data) of a 200 answer."""
        if "\n" in line or "\r" in line:
            raise ValueError("AGI command may not contain line breaks")
        self._writer.write(line.encode() + b"\n")
        await self._writer.drain()
        raw = await self._reader.readline()
        if not raw:
            raise AgiProtocolError(f"connection closed during {line.split(' ', maxsplit=1)[0]}")
        text = raw.decode("utf-8", "replace").rstrip("\r\n")
        if text == "HANGUP":
            raise AgiProtocolError("channel hung up")
        match = _RESULT.match(text)
        if match is None or match["code"] != "200" or match["result"] is None:
            raise AgiProtocolError(f"unexpected answer {text[:80]!r}")
        return int(match["result"]), match["data"] or ""

    async def get_variable(self, name: str) -> str | None:
        if not _VARIABLE_NAME.match(name):
            raise ValueError(f"invalid channel variable name {name!r}")
        result, data = await self.command(f"GET VARIABLE {name}")
        return data if result == 1 else None

    async def get_variables(self, names: list[str]) -> dict[str, str]:
        """Several variables in one round trip (GET FULL VARIABLE), empty when unset.

        Only for variables whose values cannot contain '|' (the dialplan filters them).
        """
        for name in names:
            if not _VARIABLE_NAME.match(name):
                raise ValueError(f"invalid channel variable name {name!r}")
        _, data = await self.command("GET FULL VARIABLE " + "|".join(f"${{{name}}}" for name in names))
        values = data.split("|")
        if len(values) != len(names):
            raise AgiProtocolError(f"expected {len(names)} values, got {len(values)}")
        return dict(zip(names, values, strict=True))

    async def set_variable(self, name: str, value: str) -> None:
        AgiReply(((name, value),))  # validates
        await self.command(f'SET VARIABLE {name} "{value}"')


Handler = Callable[[AgiSession], Awaitable[AgiReply]]


@dataclass
class AgiStats:
    requests: int = 0
    answered: int = 0
    fallbacks: int = 0
    rejected: int = 0


@dataclass
class _Exchange:
    peer: object
    request: AgiRequest | None = None
    outcome: str = "rejected"


class FastAgiServer:
    def __init__(
        self,
        handler: Handler,
        *,
        fallback: AgiReply,
        host: str,
        port: int,
        deadline: float,
        max_header_bytes: int = 16384,
        on_done: Callable[[str, float], None] | None = None,
    ) -> None:
        self._handler = handler
        self._fallback = fallback
        self._host = host
        self._port = port
        self._deadline = deadline
        self._max_header_bytes = max_header_bytes
        self._on_done = on_done
        self._server: asyncio.Server | None = None
        self._sessions: set[asyncio.Task[None]] = set()
        self.stats = AgiStats()

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            return self._port
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, self._host, self._port, limit=self._max_header_bytes, reuse_address=True
        )
        log.info("FastAGI listening on %s:%s", self._host, self.port)

    async def stop(self) -> None:
        """Stop accepting; requests in flight finish within their deadline."""
        if self._server is None:
            return
        self._server.close()
        if self._sessions:
            await asyncio.wait(set(self._sessions), timeout=self._deadline + 0.5)
        for task in list(self._sessions):
            task.cancel()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                await self._server.wait_closed()
        self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._sessions.add(task)
        started = time.perf_counter()
        self.stats.requests += 1
        exchange = _Exchange(writer.get_extra_info("peername"))
        try:
            async with asyncio.timeout(self._deadline):
                await self._exchange(reader, writer, exchange)
        except TimeoutError:
            if exchange.request is None:
                log.warning("FastAGI peer %s sent no complete request within the deadline", exchange.peer)
            else:
                log.warning(
                    "FastAGI exchange for %s passed its deadline; dialplan falls back", exchange.request.uniqueid
                )
                exchange.outcome = "late" if exchange.outcome == "answered" else "fallback"
        except (AgiProtocolError, OSError) as exc:
            log.warning("FastAGI exchange with %s broke off: %s", exchange.peer, exc)
            exchange.outcome = "broken"
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(0.2):
                    await writer.wait_closed()
            self._sessions.discard(task)
            self._count(exchange.outcome, time.perf_counter() - started)

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, exchange: _Exchange) -> None:
        try:
            request = exchange.request = await self._read_request(reader)
        except (AgiProtocolError, ValueError) as exc:
            log.warning("FastAGI request from %s refused: %s", exchange.peer, exc)
            return
        session = AgiSession(reader, writer, request)
        # The handler gets most of the budget; the rest is for sending the
        # fallback when it fails.
        try:
            async with asyncio.timeout(self._deadline * 0.7):
                reply = await self._handler(session)
            exchange.outcome = "answered"
        except (TimeoutError, AgiProtocolError, OSError, ValueError) as exc:
            log.warning("FastAGI %s for %s: handler failed (%s): local queue",
                        request.script, request.uniqueid, exc or type(exc).__name__)  # fmt: skip
            reply, exchange.outcome = self._fallback, "fallback"
        except Exception:
            log.exception("FastAGI %s for %s: handler crashed: local queue", request.script, request.uniqueid)
            reply, exchange.outcome = self._fallback, "fallback"
        for name, value in reply.variables:
            await session.set_variable(name, value)

    def _count(self, outcome: str, seconds: float) -> None:
        if outcome == "answered":
            self.stats.answered += 1
        elif outcome == "fallback":
            self.stats.fallbacks += 1
        else:
            self.stats.rejected += 1
        if self._on_done is not None:
            self._on_done(outcome, seconds)

    async def _read_request(self, reader: asyncio.StreamReader) -> AgiRequest:
        headers: dict[str, str] = {}
        total = 0
        while True:
            raw = await reader.readline()
            if not raw:
                raise AgiProtocolError("connection closed before the request was complete")
            total += len(raw)
            if total > self._max_header_bytes:
                raise AgiProtocolError("request too large")
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if line == "":
                break
            key, sep, value = line.partition(": ")
            if not sep or not key.startswith("agi_"):
                raise AgiProtocolError(f"not an AGI header: {line[:60]!r}")
            headers[key] = value
        if "agi_network_script" not in headers and "agi_request" not in headers:
            raise AgiProtocolError("no agi_network_script in the request")
        arguments = tuple(headers[f"agi_arg_{i}"] for i in range(1, 64) if f"agi_arg_{i}" in headers)
        script = headers.get("agi_network_script") or headers["agi_request"].rsplit("/", 1)[-1]
        return AgiRequest(
            script=script.split("?", 1)[0],
            arguments=arguments,
            channel=headers.get("agi_channel", ""),
            uniqueid=headers.get("agi_uniqueid", ""),
            caller_number=headers.get("agi_callerid", ""),
            context=headers.get("agi_context", ""),
            extension=headers.get("agi_extension", ""),
            headers=headers,
        )
