"""AmiClient life cycle against a stand-in AMI server on loopback.

The stand-in can go silent (a half-open connection) or refuse logins, which a
real Asterisk cannot be made to do on demand; calls against the real Asterisk
are in tests/integration.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from telephony import events
from telephony.ami import AmiClient, AmiNotConnected, AmiSettings, AmiTimeout


@dataclass
class StandInAsterisk:
    answer_pings: bool = True
    accept_login: bool = True
    logins: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    server: asyncio.Server | None = None

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        writer.write(b"Asterisk Call Manager/11.0.0\r\n")
        try:
            while True:
                raw = await reader.readuntil(b"\r\n\r\n")
                fields = dict(line.split(": ", 1) for line in raw.decode().strip().split("\r\n") if ": " in line)
                action, action_id = fields.get("Action", "").lower(), fields.get("ActionID", "")
                if action == "login":
                    self.logins.put_nowait(fields.get("Username", ""))
                    status = "Success" if self.accept_login else "Error"
                    writer.write(f"Response: {status}\r\nActionID: {action_id}\r\nMessage: x\r\n\r\n".encode())
                elif action == "ping" and self.answer_pings:
                    writer.write(f"Response: Success\r\nActionID: {action_id}\r\nPing: Pong\r\n\r\n".encode())
                # anything else: no answer at all
        except (asyncio.IncompleteReadError, ConnectionError):
            pass

    def push_event(self, text: str) -> None:
        for writer in self.writers:
            if not writer.is_closing():
                writer.write(text.encode())


@pytest.fixture
async def asterisk() -> AsyncIterator[StandInAsterisk]:
    stand_in = StandInAsterisk()
    stand_in.server = await asyncio.start_server(stand_in.serve, "127.0.0.1", 0)
    yield stand_in
    stand_in.server.close()
    for writer in stand_in.writers:
        writer.close()


def client_for(stand_in: StandInAsterisk, received: asyncio.Queue | None = None) -> AmiClient:
    assert stand_in.server is not None
    port = stand_in.server.sockets[0].getsockname()[1]
    settings = AmiSettings(
        port=port, secret="s", ping_interval=0.1, ping_timeout=0.2, action_timeout=0.3,
        reconnect_min=0.05, reconnect_max=0.1, connect_timeout=1.0,
    )  # fmt: skip
    return AmiClient(settings, "jena", on_event=(received.put_nowait if received is not None else lambda _: None))


@contextlib.asynccontextmanager
async def running(client: AmiClient) -> AsyncIterator[AmiClient]:
    """The client's connection loop for the length of the block, cancelled however it ends."""
    runner = asyncio.create_task(client.run())
    try:
        yield client
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


async def test_a_silent_connection_is_dropped_and_rebuilt_by_the_watchdog(asterisk: StandInAsterisk) -> None:
    client = client_for(asterisk)
    async with running(client):
        async with asyncio.timeout(5):
            await client.connected.wait()
            asterisk.answer_pings = False  # half-open: nothing comes back any more
            await client.disconnected.wait()
            asterisk.answer_pings = True
            await client.connected.wait()
        assert client.connections == 2


async def test_an_unanswered_action_times_out_instead_of_hanging(asterisk: StandInAsterisk) -> None:
    client = client_for(asterisk)
    async with running(client):
        async with asyncio.timeout(5):
            await client.connected.wait()
        with pytest.raises(AmiTimeout):
            await client.action({"Action": "QueueStatus"})


async def test_actions_fail_at_once_when_not_connected(asterisk: StandInAsterisk) -> None:
    client = client_for(asterisk)
    with pytest.raises(AmiNotConnected):
        await client.action({"Action": "Ping"})


async def test_a_refused_login_is_retried_with_backoff(asterisk: StandInAsterisk) -> None:
    asterisk.accept_login = False
    client = client_for(asterisk)
    async with running(client):
        async with asyncio.timeout(5):
            for _ in range(3):
                await asterisk.logins.get()
        assert not client.connected.is_set()


async def test_malformed_events_do_not_stop_the_reader(asterisk: StandInAsterisk) -> None:
    received: asyncio.Queue = asyncio.Queue()
    client = client_for(asterisk, received)
    async with running(client):
        async with asyncio.timeout(5):
            await client.connected.wait()
            asterisk.push_event("Event: AgentConnect\r\nGarbage line without colon\r\n\r\n")
            asterisk.push_event("\x00\xff\r\n\r\n")
            asterisk.push_event("Event: Hangup\r\nUniqueid: jena-1.1\r\nCause: sixteen\r\n\r\n")
            first = await received.get()
        assert first == events.ChannelHungUp("jena", "jena-1.1", "jena-1.1", "jena-1.1", "", 0)
        assert received.empty()
        assert client.connected.is_set()


AGENT_CONNECT = (
    "Event: AgentConnect\r\nPrivilege: agent,all\r\nTimestamp: 1700000000.123456\r\nChannel: PJSIP/carrier-00000001\r\n"
    "CallerIDNum: 036411234567\r\nUniqueid: jena-1.1\r\nLinkedid: jena-1.1\r\n"
    "ChanVariable: V112_CALL_ID=jena-1.1\r\nChanVariable: V112_CALLER=+4936411234567\r\n"
    "ChanVariable: V112_FROM_SITE=\r\n"
    "DestChannel: PJSIP/desk-1-00000002\r\nQueue: 112-jena\r\nInterface: PJSIP/desk-1\r\nMemberName: desk-1\r\n"
    "HoldTime: 3\r\nRingTime: 2"
)  # fmt: skip
EVENTS = [
    AGENT_CONNECT,
    "Event: Hangup\r\nUniqueid: jena-1.1\r\nChannel: PJSIP/carrier-00000001\r\nCause: 16\r\n"
    "ChanVariable: V112_CALL_ID=jena-1.1",
    "Event: QueueMemberStatus\r\nQueue: 112-jena\r\nMemberName: desk-1\r\nInterface: PJSIP/desk-1\r\nStatus: 2\r\n"
    "Paused: 0\r\nInCall: 1",
    "Event: UserEvent\r\nUserEvent: V112Answered\r\nUniqueid: jena-1.1\r\nCallId: jena-1.1",
    "Event: AgentCalled\r\nGarbage without colon\r\nQueue: q\r\nUniqueid: u\r\nMemberName: d\r\nResult: a%20b ",
]


@pytest.mark.parametrize("block", EVENTS)
def test_the_lean_event_path_reads_what_panoramisks_message_reads(block: str) -> None:
    from panoramisk.message import Message

    from telephony.ami import event_fields

    assert events.parse_lowered(event_fields(block), "jena") == events.parse(Message.from_line(block), "jena")
    assert event_fields(block) == {str(k).lower(): v for k, v in Message.from_line(block).items() if k != "content"}


async def test_events_cut_anywhere_by_tcp_arrive_typed_and_shutdown_drops_the_connection(
    asterisk: StandInAsterisk,
) -> None:
    received: asyncio.Queue = asyncio.Queue()
    client = client_for(asterisk, received)
    async with running(client):
        async with asyncio.timeout(5):
            await client.connected.wait()
            text = AGENT_CONNECT + "\r\n\r\n"
            asterisk.push_event(text[:57])
            await asterisk.writers[0].drain()
            asterisk.push_event(text[57:] + "Event: QueueMemberStatus\r\nActionID: 7\r\nQueue: q\r\nMemberName: d\r\n")
            asterisk.push_event("\r\n")
            answered, state = await received.get(), await received.get()
            assert isinstance(answered, events.DispatcherAnswered)
            assert (answered.call_id, answered.caller_number, answered.dispatcher) == ("jena-1.1", "+4936411234567",
                                                                                       "desk-1")  # fmt: skip
            assert isinstance(state, events.DispatcherStateChanged)  # an ActionID no action awaits: an event still
            asterisk.push_event("Event: Shutdown\r\nShutdown: Uncleanly\r\nRestart: True\r\n\r\n")
            await client.disconnected.wait()
