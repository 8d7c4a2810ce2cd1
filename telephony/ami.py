"""AMI connection with reconnect, action timeouts and a dead-connection watchdog.

panoramisk 1.4 parses the AMI wire format well (``AMIProtocol``, ``Message``)
but its ``Manager`` has no action timeout, no dead-connection detection and
replays queued actions after a reconnect. So this module keeps panoramisk's
protocol and owns the connection life cycle itself:

- connect and log in within ``connect_timeout``; on failure retry with
  exponential back-off between ``reconnect_min`` and ``reconnect_max``;
- every action has a timeout; pending actions fail at once when the
  connection drops and are never replayed (a stale Redirect after a reconnect
  could move the wrong caller);
- a Ping every ``ping_interval``: no answer within ``ping_timeout`` and the
  connection is torn down and rebuilt (a half-open TCP connection otherwise
  looks healthy forever);
- every AMI event is turned into a typed event (telephony.events) before it
  leaves this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote

from panoramisk import actions as pm_actions
from panoramisk.ami_protocol import AMIProtocol
from panoramisk.message import Message
from panoramisk.utils import EOL
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from telephony import dialplan, events

log = logging.getLogger(__name__)


class AmiSettings(BaseModel):
    """The Asterisk Manager Interface of this site's Asterisk (settings section `ami`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=5038, ge=1, le=65535)
    username: str = "verbund112"
    secret: SecretStr = SecretStr("")
    connect_timeout: float = Field(default=3.0, gt=0, description="TCP connect and login, seconds")
    action_timeout: float = Field(default=3.0, gt=0, description="answer to one AMI action, seconds")
    ping_interval: float = Field(default=2.0, gt=0, description="watchdog: a Ping this often, seconds")
    ping_timeout: float = Field(default=2.0, gt=0, description="watchdog: no Pong within this: reconnect")
    reconnect_min: float = Field(default=0.2, gt=0, description="first reconnect delay, seconds")
    reconnect_max: float = Field(default=5.0, gt=0, description="reconnect back-off cap, seconds")


EventHandler = Callable[[events.SiteEvent], None]
ConnectedHook = Callable[["AmiClient"], Awaitable[None]]


class AmiError(Exception):
    """An AMI action failed."""


class AmiNotConnected(AmiError):
    pass


class AmiTimeout(AmiError):
    pass


class AmiConnectionLost(AmiError):
    pass


class _AmiProtocol(AMIProtocol):  # type: ignore[misc]  # panoramisk has no type hints
    """panoramisk's protocol with a lean path for what a call brings most: plain events.

    An event without an ActionID (one that answers no action) is split into a dict of
    lower-case header names by ``event_fields`` and goes to the owner as that, not through
    panoramisk's ``Message`` (a case-insensitive mapping built header by header, then copied
    by telephony.events: reading AMI was the largest share of the service's CPU per routed
    call). Everything else (the banner, responses, events listed in an answer, Shutdown)
    takes panoramisk's path.
    """

    def data_received(self, data: bytes) -> None:
        if self.version is None:
            super().data_received(data)  # the banner (the protocol version) is read there
            return
        text = data.decode(getattr(self, "encoding", "ascii"), "ignore")
        if self.queue:
            text = self.queue.popleft() + text
        blocks = text.split(EOL + EOL)
        self.queue.append(blocks.pop(-1))
        for raw in blocks:
            block = raw.strip()  # as panoramisk: Asterisk sometimes ends a message with a single EOL
            if block.startswith("Event: ") and "\r\nActionID: " not in block and not block.startswith(_SHUTDOWN):
                self.factory.dispatch_fields(event_fields(block))
                continue
            message = Message.from_line(block)
            if message is not None:
                self.handle_message(message)


_SHUTDOWN = "Event: Shutdown"  # panoramisk's path closes the connection


def event_fields(block: str) -> dict[str, Any]:
    """The headers of one AMI message as a dict with lower-case names, as panoramisk reads them:
    a line without ': ' is skipped, a repeated header (ChanVariable) becomes a list."""
    fields: dict[str, Any] = {}
    for line in block.split(EOL):
        key, sep, value = line.partition(": ")
        if not sep:
            continue
        key = key.lower()
        if key in _QUOTED:
            value = unquote(value).strip()
        if key in fields:
            known = fields[key]
            if isinstance(known, list):
                known.append(value)
            else:
                fields[key] = [known, value]
        else:
            fields[key] = value
    return fields


_QUOTED = frozenset(Message.quoted_keys)


class _ProtocolOwner:
    """What panoramisk's AMIProtocol expects as its ``factory``."""

    forgetable_actions = ("ping", "login")

    def __init__(self, client: AmiClient) -> None:
        self._client: AmiClient | None = client
        # AMIProtocol parks unanswered actions here on close to replay them
        # later. We never replay; the client fails them instead.
        self.awaiting_actions: deque[Any] = deque()

    def detach(self) -> None:
        """No more callbacks from a connection the client gave up."""
        self._client = None

    def dispatch(self, message: Message) -> None:
        if self._client is not None:
            self._client._on_fields({str(key).lower(): value for key, value in message.items()})

    def dispatch_fields(self, fields: dict[str, Any]) -> None:
        if self._client is not None:
            self._client._on_fields(fields)

    def connection_lost(self, exc: object) -> None:
        self.awaiting_actions.clear()
        if self._client is not None:
            self._client._on_connection_lost(exc)


class AmiClient:
    def __init__(
        self,
        settings: AmiSettings,
        site: str,
        on_event: EventHandler,
        on_connected: ConnectedHook | None = None,
    ) -> None:
        self.settings = settings
        self.site = site
        self._on_event = on_event
        self._on_connected = on_connected
        self._protocol: AMIProtocol | None = None
        self._owner: _ProtocolOwner | None = None
        self._lost: asyncio.Event = asyncio.Event()
        self._pending: set[asyncio.Future[Any]] = set()
        self.connected = asyncio.Event()
        self.disconnected = asyncio.Event()
        self.disconnected.set()
        self.connections = 0  # successful logins so far (reconnects = connections - 1)
        self.events_received = 0
        self.bad_events = 0

    # -- public ---------------------------------------------------------------

    @property
    def is_connected(self) -> bool:
        return self.connected.is_set()

    async def run(self) -> None:
        """Keep a logged-in connection until cancelled."""
        delay = self.settings.reconnect_min
        try:
            while True:
                try:
                    await self._connect_and_login()
                except (OSError, TimeoutError, AmiError) as exc:
                    log.warning("AMI %s:%s: cannot connect: %s; retry in %.1f s",
                                self.settings.host, self.settings.port, exc or type(exc).__name__, delay)  # fmt: skip
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.settings.reconnect_max)
                    continue
                delay = self.settings.reconnect_min
                await self._serve_connection()
                log.warning("AMI connection to %s lost; reconnecting", self.site)
        finally:
            self._close("service stopping")

    async def action(self, fields: dict[str, str], answer_within: float | None = None) -> Message | list[Message]:
        """Send one action and wait for its complete answer (a list for event lists)."""
        protocol = self._protocol
        if protocol is None or not self.connected.is_set():
            raise AmiNotConnected(f"AMI of {self.site} is not connected")
        action = pm_actions.Action(dict(fields))
        # as_list=None: panoramisk tells an event list (QueueStatus) from a single answer itself;
        # its default (False) ends every action at the first message
        future: asyncio.Future[Any] = protocol.send(action, as_list=None)
        self._pending.add(future)
        try:
            async with asyncio.timeout(answer_within or self.settings.action_timeout):
                response = await future
        except TimeoutError as exc:
            protocol.responses.pop(action.id, None)
            raise AmiTimeout(f"no answer to {fields.get('Action')} within the timeout") from exc
        finally:
            self._pending.discard(future)
        first = response[0] if isinstance(response, list) else response
        if first.get("Response") == "Error":
            raise AmiError(f"{fields.get('Action')}: {first.get('Message', 'error')}")
        return response

    async def queue_status(self, queue: str) -> list[events.DispatcherStateChanged | events.CallerWaiting]:
        """The current state of every member of a queue, and the callers waiting in it.

        QueueStatus lists callers without channel variables: the Verbund call id
        and the moved mark are read for each with Getvar. A caller whose mark
        cannot be read counts as moved (it is never moved by mistake).
        """
        answer = await self.action({"Action": "QueueStatus", "Queue": queue})
        found: list[events.DispatcherStateChanged | events.CallerWaiting] = []
        for message in answer if isinstance(answer, list) else [answer]:
            event = events.parse(message, self.site)
            if isinstance(event, events.CallerWaiting):
                event = await self._with_call_variables(event)
            if isinstance(event, events.DispatcherStateChanged | events.CallerWaiting):
                found.append(event)
        return found

    async def _with_call_variables(self, waiting: events.CallerWaiting) -> events.CallerWaiting:
        try:
            call_id = await self.channel_variable(waiting.channel, dialplan.CALL_ID)
            moved = await self.channel_variable(waiting.channel, dialplan.MOVED)
        except AmiError as exc:
            log.warning("variables of waiting caller %s not read (%s): not moved", waiting.channel, exc)
            return dataclasses.replace(waiting, moved=True)
        return dataclasses.replace(waiting, call_id=call_id or waiting.call_id, moved=moved == "1")

    async def channel_variable(self, channel: str, name: str) -> str:
        answer = await self.action({"Action": "Getvar", "Channel": channel, "Variable": name})
        first = answer[0] if isinstance(answer, list) else answer
        return str(first.get("Value") or "")

    async def abandoned_outbox(self) -> list[events.CallEnded | events.BadDialplanEvent]:
        """The unanswered calls the dialplan wrote to AstDB (read only: DBGetTree, write class reporting).

        An entry that does not parse comes back as BadDialplanEvent (never raised).
        """
        answer = await self.action({"Action": "DBGetTree", "Family": dialplan.ABANDONED_FAMILY})
        found: list[events.CallEnded | events.BadDialplanEvent] = []
        for message in answer if isinstance(answer, list) else [answer]:
            if str(message.get("Event", "")).lower() != "dbgettreeresponse":
                continue
            try:
                found.append(events.outbox_entry(str(message.get("Key", "")), str(message.get("Val", "")), self.site))
            except events.DialplanEventError as exc:
                found.append(events.BadDialplanEvent(self.site, "outbox entry", str(exc)))
        return found

    async def answered_calls(self) -> list[events.DispatcherAnswered]:
        """The calls a dispatcher of this site holds right now (Status: write class reporting).

        Read after every connect: the AgentConnect of a call answered while the
        service was down or AMI was cut is never sent again.
        """
        answer = await self.action({"Action": "Status", "Variables": ",".join(events.ANSWERED_CALL_VARIABLES)})
        return events.answered_calls(answer if isinstance(answer, list) else [answer], self.site)

    async def withdraw_caller(self, queue: str, channel: str, info: str) -> None:
        """Take a caller who is still waiting out of the queue, back to the dialplan.

        Unlike Redirect this cannot tear an answered call away from a dispatcher:
        Asterisk refuses it ("No such caller") once the caller has left the queue.
        The dialplan reads ``info`` from QUEUE_WITHDRAW_INFO.
        """
        await self.action({"Action": "QueueWithdrawCaller", "Queue": queue, "Caller": channel, "WithdrawInfo": info})

    # -- connection life cycle ------------------------------------------------

    async def _connect_and_login(self) -> None:
        loop = asyncio.get_running_loop()
        owner = _ProtocolOwner(self)
        self._lost = asyncio.Event()
        try:
            async with asyncio.timeout(self.settings.connect_timeout):
                _transport, protocol = await loop.create_connection(
                    _AmiProtocol, self.settings.host, self.settings.port
                )
                protocol.factory = owner
                self._owner = owner
                protocol.encoding = "utf8"
                protocol.log = log
                self._protocol = protocol
                login = protocol.send(
                    pm_actions.Action(
                        {
                            "Action": "Login",
                            "Username": self.settings.username,
                            "Secret": self.settings.secret.get_secret_value(),
                            "Events": "on",
                        }
                    )
                )
                self._pending.add(login)
                try:
                    response = await login
                finally:
                    self._pending.discard(login)
        except BaseException:
            self._close("connect or login failed")
            raise
        if not response.success:
            self._close("login refused")
            raise AmiError(f"login refused: {response.get('Message', '')}")
        self.connections += 1
        self.disconnected.clear()
        self.connected.set()
        log.info("AMI connected to %s (%s:%s)", self.site, self.settings.host, self.settings.port)
        if self._on_connected is not None:
            try:
                await self._on_connected(self)
            except AmiError as exc:
                log.warning("AMI on-connect step failed: %s", exc)

    async def _serve_connection(self) -> None:
        """Ping until the connection is lost or stops answering."""
        while not self._lost.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.ping_interval):
                    await self._lost.wait()
            if self._lost.is_set():
                break
            try:
                await self.action({"Action": "Ping"}, answer_within=self.settings.ping_timeout)
            except AmiError as exc:
                log.warning("AMI watchdog: %s; dropping the connection", exc)
                break
        self._close("connection lost or dead")

    def _close(self, reason: str) -> None:
        self.connected.clear()
        self.disconnected.set()
        protocol, self._protocol = self._protocol, None
        owner, self._owner = self._owner, None
        if owner is not None:
            owner.detach()
        if protocol is not None:
            with contextlib.suppress(Exception):
                protocol.transport.close()
        self._fail_pending(AmiConnectionLost(reason))
        self._lost.set()

    def _fail_pending(self, exc: AmiError) -> None:
        for future in list(self._pending):
            if not future.done():
                future.set_exception(exc)
                # Mark retrieved: nobody may be awaiting it any more.
                future.exception()
        self._pending.clear()

    # -- callbacks from AMIProtocol ------------------------------------------

    def _on_connection_lost(self, exc: object) -> None:
        if self._protocol is not None:
            self.connected.clear()
            self.disconnected.set()
            self._fail_pending(AmiConnectionLost(str(exc) or "connection lost"))
            self._lost.set()

    def _on_fields(self, fields: dict[str, Any]) -> None:
        """One AMI event, its header names in lower case."""
        self.events_received += 1
        try:
            event = events.parse_lowered(fields, self.site)
        except Exception as exc:  # a malformed event must never stop the reader
            self.bad_events += 1
            # the type only above DEBUG: the error's text may quote a field (a caller number)
            log.warning("AMI event %r could not be read (%s)", fields.get("event"), type(exc).__name__)
            log.debug("AMI event %r could not be read", fields.get("event"), exc_info=True)
            return
        if event is None:
            return
        try:
            self._on_event(event)
        except Exception:
            log.exception("handler failed for %s", type(event).__name__)
