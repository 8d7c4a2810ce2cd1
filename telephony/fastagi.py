"""FastAGI server that answers every request within its deadline, always.

Asterisk waits forever on a FastAGI server that accepted a connection and
then says nothing (the dialplan's TIMEOUT(absolute) net catches that too, but
only after seconds). So each connection gets one hard deadline for the whole
exchange: read the request, ask the handler, send its commands. A handler that
is slow or fails is replaced by the fallback reply (the local queue); a peer
that sends garbage or nothing is logged and dropped; nothing a peer does can
stall the server or another call.

Only the site's Asterisk may ask: a connection from an address outside
``fastagi.allowed_peers`` is closed before anything is read, and the first
command of every exchange asks Asterisk for the shared secret of its
verbund112.conf (telephony.dialplan.FASTAGI_SECRET), compared in constant time
with ``fastagi.secret``. A refused peer never reaches the handler: no record
written, no AML pull started.

panoramisk's FastAGI ``Application`` is not used: it reads the request in a
loop that spins forever on an early EOF and has no timeout anywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field, IPvAnyNetwork, SecretStr, ValidationError, field_validator

from telephony import dialplan

log = logging.getLogger(__name__)

_RESULT = re.compile(r"^(?P<code>\d{3})[ -](?:result=(?P<result>-?\d+)(?: \((?P<data>.*)\))?)?(?P<rest>.*)$")
_VARIABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


_ARGUMENT_HEADERS = tuple(f"agi_arg_{i}" for i in range(1, 64))  # in order; named once, not per request


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
    allowed_peers: list[IPvAnyNetwork] | None = Field(
        default=None,
        description="addresses or networks Asterisk connects from; default: the AMI host (ami.host)",
    )
    secret: SecretStr | None = Field(
        default=None,
        description="the secret in Asterisk's verbund112.conf (the site secrets' fastagi_secret); required",
    )

    @field_validator("secret")
    @classmethod
    def _secret_is_plain(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not SECRET_PATTERN.fullmatch(value.get_secret_value()):
            raise ValueError("must be 16 to 128 characters of A-Z a-z 0-9 _ -")
        return value


# what verbund112.conf and the settings accept (the alphabet of secrets.token_urlsafe)
SECRET_PATTERN = re.compile(r"[A-Za-z0-9_-]{16,128}")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class PeerSetupError(ValueError):
    """The settings do not say who our Asterisk is (no secret, no address): the service must not start."""


@dataclass(frozen=True)
class PeerPolicy:
    """Who may ask: Asterisk's addresses, and the shared secret of its verbund112.conf as proof."""

    networks: tuple[Network, ...]
    secret: str = field(repr=False)

    @classmethod
    def from_settings(cls, settings: FastAgiSettings, asterisk_host: str) -> PeerPolicy:
        """The settings' peers, or the Asterisk host's address; PeerSetupError if that cannot be known."""
        if settings.secret is None:
            raise PeerSetupError(
                "fastagi.secret is not set (VERBUND112_FASTAGI__SECRET): it must be the secret of "
                f"Asterisk's {dialplan.FASTAGI_SECRET_FILE}"
            )
        if settings.allowed_peers is not None:
            networks = tuple(settings.allowed_peers)
        else:
            try:
                networks = (ipaddress.ip_network(asterisk_host),)
            except ValueError:
                raise PeerSetupError(
                    f"fastagi.allowed_peers is not set and ami.host {asterisk_host!r} is not an IP address: "
                    "list the addresses Asterisk connects from"
                ) from None
        if not networks:
            raise PeerSetupError("fastagi.allowed_peers is empty: no Asterisk could ask")
        return cls(networks, settings.secret.get_secret_value())

    def allows(self, peername: object) -> bool:
        """Whether a connection's peer address (socket peername) is one of Asterisk's."""
        if not isinstance(peername, tuple) or not peername:
            return False  # not an IP socket
        try:
            address = ipaddress.ip_address(peername[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # an IPv4 peer on a dual-stack socket
        return any(address in network for network in self.networks)

    def proven(self, answer: str) -> bool:
        return hmac.compare_digest(answer.encode(), self.secret.encode())


class AgiProtocolError(Exception):
    """The peer broke the AGI protocol (garbage, EOF, a refused command)."""


class _Refused(Exception):
    """The peer is not our Asterisk: the exchange ends without a word."""


_REFUSALS = {
    "peer": "not an allowed peer (fastagi.allowed_peers)",
    "secret": f"wrong or missing secret (the one of Asterisk's {dialplan.FASTAGI_SECRET_FILE})",
}


def _reason(exc: BaseException) -> str:
    """What went wrong, for the log: a validation error's count and model, never the values it quotes."""
    if isinstance(exc, ValidationError):
        return f"{exc.error_count()} invalid values in {exc.title}"
    return str(exc) or type(exc).__name__


def _address(peer: object) -> str:
    return str(peer[0]) if isinstance(peer, tuple) and peer else "an unknown peer"


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
        # variables the server read together with the secret (no round trip of their own)
        self.prefetched: dict[str, str] = {}

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
            # the code only: an answer may carry a channel variable (a number, a position)
            raise AgiProtocolError(f"unexpected answer (code {text[:3]!r}, {len(text)} characters)")
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
        if all(name in self.prefetched for name in names):
            return {name: self.prefetched[name] for name in names}
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
    refused: int = 0  # peers that are not our Asterisk (address or secret)


# how an exchange ended (on_done): the reply given, the fallback reply (handler failed or too slow: the
# dialplan routes locally), the reply sent past the deadline, the connection broken, the request refused
OUTCOMES = ("answered", "fallback", "late", "broken", "rejected")


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
        peers: PeerPolicy,
        max_header_bytes: int = 16384,
        on_done: Callable[[str, float], None] | None = None,
        on_refused: Callable[[str], None] | None = None,
        prefetch: Sequence[str] = (),
    ) -> None:
        for name in prefetch:
            if not _VARIABLE_NAME.match(name):
                raise ValueError(f"invalid channel variable name {name!r}")
        self._handler = handler
        # what the handler reads first, fetched with the secret: the proof costs no round trip
        self._prefetch = tuple(prefetch)
        self._peers = peers
        self._on_refused = on_refused
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

    @property
    def listening(self) -> bool:
        return self._server is not None and self._server.is_serving()

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
        peer = writer.get_extra_info("peername")
        if not self._peers.allows(peer):
            self._refuse("peer", peer)
            writer.transport.abort()  # nothing read, nothing said
            return
        self._sessions.add(task)
        started = time.perf_counter()
        self.stats.requests += 1
        exchange = _Exchange(peer)
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
        except _Refused:
            exchange.outcome = "refused"
        except (AgiProtocolError, OSError) as exc:
            log.warning("FastAGI exchange with %s broke off: %s", exchange.peer, exc)
            exchange.outcome = "broken"
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(0.2):
                    await writer.wait_closed()
            self._sessions.discard(task)
            if exchange.outcome != "refused":
                self._count(exchange.outcome, time.perf_counter() - started)

    def _refuse(self, reason: str, peer: object) -> None:
        self.stats.refused += 1
        # the address only: a refused peer's request may carry anything
        log.warning("FastAGI connection from %s refused: %s", _address(peer), _REFUSALS[reason])
        if self._on_refused is not None:
            self._on_refused(reason)

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, exchange: _Exchange) -> None:
        try:
            request = exchange.request = await self._read_request(reader)
        except (AgiProtocolError, ValueError) as exc:
            log.warning("FastAGI request from %s refused: %s", exchange.peer, exc)
            return
        session = AgiSession(reader, writer, request)
        # First the proof that this is our Asterisk: before the handler reads or writes anything.
        # The variables the handler reads first come in the same answer (the secret holds no '|',
        # so it is the first field whatever the rest holds); they are used only once it is proven.
        _, data = await session.command(
            "GET FULL VARIABLE " + "|".join(f"${{{e}}}" for e in (dialplan.FASTAGI_SECRET, *self._prefetch))
        )
        secret, *values = data.split("|")
        if not self._peers.proven(secret):
            self._refuse("secret", exchange.peer)
            raise _Refused
        if len(values) == len(self._prefetch):
            session.prefetched = dict(zip(self._prefetch, values, strict=True))
        # The handler gets most of the budget; the rest is for sending the
        # fallback when it fails.
        try:
            async with asyncio.timeout(self._deadline * 0.7):
                reply = await self._handler(session)
            exchange.outcome = "answered"
        except (TimeoutError, AgiProtocolError, OSError, ValueError) as exc:
            log.warning("FastAGI %s for %s: handler failed (%s): local queue",
                        request.script, request.uniqueid, _reason(exc))  # fmt: skip
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
                raise AgiProtocolError(f"not an AGI header: {line.partition(':')[0][:30]!r}")  # the name only
            headers[key] = value
        if "agi_network_script" not in headers and "agi_request" not in headers:
            raise AgiProtocolError("no agi_network_script in the request")
        arguments = tuple(headers[name] for name in _ARGUMENT_HEADERS if name in headers)
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
