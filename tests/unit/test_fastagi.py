"""The FastAGI server answers every request within its deadline, whatever the peer does.

The peer here is a small stand-in for Asterisk's side of the protocol; the
real Asterisk talks to the same server in tests/integration.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from lab.processes import free_tcp_port
from telephony import dialplan
from telephony.fastagi import AgiReply, AgiSession, FastAgiServer, FastAgiSettings, PeerPolicy, PeerSetupError
from tests.support import agi_client
from verbund112.service import Service, running
from verbund112.settings import Settings

REQUEST = agi_client.request_text()
SECRET = "secret-of-the-dialplan-0123"
ASTERISK = ["127.0.0.1"]  # where Asterisk connects from in these tests
PEERS = PeerPolicy.from_settings(FastAgiSettings(allowed_peers=ASTERISK, secret=SECRET), asterisk_host="unused")


async def asterisk_side(
    port: int,
    request: str = REQUEST,
    variables: dict[str, str] | None = None,
    *,
    secret: str | None = SECRET,
    source: str | None = None,
) -> dict[str, str]:
    """Play Asterisk's side of the exchange (with the dialplan's secret unless told otherwise)."""
    variables = dict(variables or {"V112_CALL_ID": "jena-1.1", "V112_CALLER": "+4936411234567"})
    if secret is not None:
        variables[dialplan.FASTAGI_SECRET] = secret
    return await agi_client.exchange(port, variables, request, source=source)


async def start(server: FastAgiServer) -> FastAgiServer:
    await server.start()
    return server


FALLBACK = AgiReply((("V112_ROUTE", "local"),))


@pytest.fixture
async def server_with() -> AsyncIterator:
    servers: list[FastAgiServer] = []

    async def make(handler, deadline: float = 0.3, on_refused=None) -> FastAgiServer:
        server = FastAgiServer(handler, fallback=FALLBACK, host="127.0.0.1", port=0, deadline=deadline, peers=PEERS,
                               on_refused=on_refused)  # fmt: skip
        servers.append(server)
        return await start(server)

    yield make
    for server in servers:
        await server.stop()


async def test_a_slow_handler_is_replaced_by_the_fallback(server_with) -> None:
    async def never(_: AgiSession) -> AgiReply:
        await asyncio.Event().wait()
        raise AssertionError

    server = await server_with(never)
    assert await asyncio.wait_for(asterisk_side(server.port), 5) == {"V112_ROUTE": "local"}
    assert server.stats.fallbacks == 1


async def test_a_crashing_handler_is_replaced_by_the_fallback(server_with) -> None:
    async def crash(_: AgiSession) -> AgiReply:
        raise RuntimeError("bug")

    server = await server_with(crash)
    assert await asyncio.wait_for(asterisk_side(server.port), 5) == {"V112_ROUTE": "local"}


async def test_the_handler_reads_channel_variables_and_its_reply_is_set(server_with) -> None:
    async def echo(session: AgiSession) -> AgiReply:
        caller = await session.get_variable("V112_CALLER")
        missing = await session.get_variable("V112_NOT_SET")
        return AgiReply((("V112_ROUTE", "partner"), ("V112_SEEN", f"{caller}/{missing}")))

    server = await server_with(echo)
    answer = await asyncio.wait_for(asterisk_side(server.port), 5)
    assert answer == {"V112_ROUTE": "partner", "V112_SEEN": "+4936411234567/None"}


async def test_what_the_handler_reads_first_comes_with_the_secret_in_one_round_trip() -> None:
    async def route(session: AgiSession) -> AgiReply:
        seen = await session.get_variables(["V112_CALL_ID", "V112_CALLER"])
        return AgiReply((("V112_ROUTE", "partner"), ("V112_SEEN", "/".join(seen.values()))))

    server = await start(FastAgiServer(route, fallback=FALLBACK, host="127.0.0.1", port=0, deadline=0.3, peers=PEERS,
                                       prefetch=("V112_CALL_ID", "V112_CALLER")))  # fmt: skip
    try:
        variables = {"V112_CALL_ID": "jena-1.1", "V112_CALLER": "+4936411234567", dialplan.FASTAGI_SECRET: SECRET}
        commands: list[str] = []
        answer = await asyncio.wait_for(agi_client.exchange(server.port, variables, REQUEST, commands=commands), 5)
        assert answer == {"V112_ROUTE": "partner", "V112_SEEN": "jena-1.1/+4936411234567"}
        gets = [c for c in commands if c.startswith("GET")]
        assert gets == [f"GET FULL VARIABLE ${{{dialplan.FASTAGI_SECRET}}}|${{V112_CALL_ID}}|${{V112_CALLER}}"]

        # a value holding '|' cannot be split: nothing is prefetched, the handler asks itself (and,
        # here, cannot split it either: the fallback); the secret, first, still held
        variables["V112_CALLER"] = "+49|36411234567"
        commands.clear()
        answer = await asyncio.wait_for(agi_client.exchange(server.port, variables, REQUEST, commands=commands), 5)
        assert answer == dict(FALLBACK.variables)
        assert [c for c in commands if c.startswith("GET")][1:] == ["GET FULL VARIABLE ${V112_CALL_ID}|${V112_CALLER}"]
        assert server.stats.refused == 0
    finally:
        await server.stop()


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x00\xff\xfe garbage without structure\n\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"agi_network_script route\n\n",  # no ': '
        b"agi_channel: PJSIP/x\n\n",  # no script
        b"agi_x: " + b"A" * 70000 + b"\n\n",  # over the size limit
        b"agi_network_script: route\n",  # then EOF in the middle
    ],
)
async def test_garbage_is_refused_and_the_connection_closed(server_with, garbage: bytes) -> None:
    async def handler(_: AgiSession) -> AgiReply:
        raise AssertionError("garbage must not reach the handler")

    server = await server_with(handler)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(garbage)
    if garbage.endswith(b"route\n"):
        writer.write_eof()
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the server, nothing said
    writer.close()
    assert server.stats.rejected == 1


async def test_a_peer_outside_the_allow_list_is_closed_before_anything_is_read(server_with) -> None:
    async def handler(_: AgiSession) -> AgiReply:
        raise AssertionError("a refused peer must not reach the handler")

    refused: list[str] = []
    server = await server_with(handler, on_refused=refused.append)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port, local_addr=("127.0.0.9", 0))
    writer.write(REQUEST.encode())  # Asterisk's request, with the secret ready: from the wrong address
    with contextlib.suppress(ConnectionResetError):
        assert await asyncio.wait_for(reader.read(), 5) == b""  # not a word said
    writer.close()
    assert (server.stats.refused, server.stats.requests, refused) == (1, 0, ["peer"])


@pytest.mark.parametrize("secret", [None, "", "secret-of-the-dialplan-0124", SECRET + "0", SECRET[:-1]])
async def test_a_peer_without_the_dialplans_secret_is_refused(server_with, secret: str | None) -> None:
    async def handler(_: AgiSession) -> AgiReply:
        raise AssertionError("a refused peer must not reach the handler")

    refused: list[str] = []
    server = await server_with(handler, on_refused=refused.append)
    assert await asyncio.wait_for(asterisk_side(server.port, secret=secret), 5) == {}  # nothing set
    assert (server.stats.refused, server.stats.answered, server.stats.fallbacks, refused) == (1, 0, 0, ["secret"])


def test_the_peers_default_to_the_asterisk_of_the_ami_settings() -> None:
    peers = PeerPolicy.from_settings(FastAgiSettings(secret=SECRET), asterisk_host="192.0.2.10")
    assert peers.allows(("192.0.2.10", 40000))
    assert peers.allows(("::ffff:192.0.2.10", 40000, 0, 0))  # IPv4 on a dual-stack socket
    assert not peers.allows(("192.0.2.11", 40000))
    assert not peers.allows("/run/socket")
    networks = PeerPolicy.from_settings(FastAgiSettings(secret=SECRET, allowed_peers=["10.1.0.0/16"]), "x")
    assert networks.allows(("10.1.2.3", 1)) and not networks.allows(("10.2.0.1", 1))


@pytest.mark.parametrize(
    ("settings", "host", "message"),
    [
        ({}, "127.0.0.1", "fastagi.secret is not set"),
        ({"secret": SECRET}, "asterisk.example", "not an IP address"),
        ({"secret": SECRET, "allowed_peers": []}, "127.0.0.1", "empty"),
    ],
)
def test_a_service_that_cannot_tell_its_asterisk_does_not_start(settings: dict, host: str, message: str) -> None:
    with pytest.raises(PeerSetupError, match=message):
        PeerPolicy.from_settings(FastAgiSettings(**settings), asterisk_host=host)
    with pytest.raises(PeerSetupError, match=message):
        Service(service_settings(fastagi={"port": 0, **settings}, ami={"host": host}))


@pytest.mark.parametrize("secret", ["short", "with space in it 0123", "semicolon;0123456789"])
def test_a_secret_the_dialplan_cannot_hold_is_refused(secret: str) -> None:
    with pytest.raises(ValidationError, match="secret"):
        FastAgiSettings(secret=secret)


async def test_refused_peers_route_nothing_and_are_counted(service: Service) -> None:
    """Neither a stranger's address nor a wrong secret reaches routing: no CallRouted (so no AML
    pull, no call record, no card); Asterisk's request after them is routed as ever."""
    port = service.fastagi.port
    forged = {"V112_CALL_ID": "jena-1.1", "V112_CALLER": "+4915199999999"}
    with service.hub.subscribe() as events:
        await asyncio.wait_for(asterisk_side(port, variables=forged, source="127.0.0.9"), 5)
        await asyncio.wait_for(asterisk_side(port, variables=forged, secret="not-the-secret-0123"), 5)
        await asyncio.wait_for(asterisk_side(port, variables=forged, secret=None), 5)
        real = {"V112_CALL_ID": "jena-2.2", "V112_CALLER": "+4936411234567"}
        assert (await asyncio.wait_for(asterisk_side(port, variables=real), 5))["V112_ROUTE"] == "local"
        routed = await asyncio.wait_for(events.get(), 5)
    assert (routed.call_id, routed.caller_number) == ("jena-2.2", "+4936411234567")  # the first event is the real one
    refused = {reason: service.registry.get_sample_value("verbund112_fastagi_refused_total", {"reason": reason})
               for reason in ("peer", "secret")}  # fmt: skip
    assert refused == {"peer": 1.0, "secret": 2.0}
    assert service.status()["fastagi"]["refused"] == 3


def service_settings(**changes) -> Settings:
    values = {
        "site": "jena",
        "ami": {"port": free_tcp_port(), "reconnect_max": 0.5},
        "redis": {"url": f"redis://127.0.0.1:{free_tcp_port()}/0"},
        "fastagi": {"port": 0, "deadline": 0.3, "allowed_peers": ASTERISK, "secret": SECRET},
        "web": {
            "port": 0,
            "tokens": {
                "t-admin-0123456789": {"role": "admin", "name": "alice"},
                "t-read-0123456789": {"role": "read", "name": "rita"},
            },
        },
    }
    return Settings(**(values | changes))


@pytest.fixture
async def service() -> AsyncIterator[Service]:
    async with running(service_settings()) as started:
        yield started


async def test_silent_and_garbage_clients_do_not_stall_the_service(service: Service) -> None:
    port = service.fastagi.port
    silent = [await asyncio.open_connection("127.0.0.1", port) for _ in range(20)]
    _, garbage_writer = await asyncio.open_connection("127.0.0.1", port)
    garbage_writer.write(b"\xde\xad\xbe\xef\n" * 100)

    # a real request is answered while all of them are connected
    answer = await asyncio.wait_for(asterisk_side(port), 5)
    assert answer == {"V112_ROUTE": "local"}

    # and every silent connection is closed by the server after its deadline
    for reader, writer in silent:
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
    garbage_writer.close()
    assert service.fastagi.stats.answered == 1
    assert service.fastagi.stats.rejected == 21


async def test_an_unknown_agi_script_gets_the_fallback(service: Service) -> None:
    request = REQUEST.replace("agi_network_script: route", "agi_network_script: whatever")
    assert await asyncio.wait_for(asterisk_side(service.fastagi.port, request), 5) == {"V112_ROUTE": "local"}
    assert service.fastagi.stats.fallbacks == 1


async def test_a_malformed_pidf_lo_location_still_routes(service: Service) -> None:
    variables = {
        "V112_CALL_ID": "jena-1.1", "V112_CALLER": "+4936411234567", "V112_GEO_HEADER_LEN": "30",
        "V112_GEO_LOCATION": 'shape="Circle",pos="999 999",radius="x"',
    }  # fmt: skip
    with service.hub.subscribe() as events:
        answer = await asyncio.wait_for(asterisk_side(service.fastagi.port, variables=variables), 5)
        routed = await asyncio.wait_for(events.get(), 5)
    assert answer["V112_ROUTE"] == "local"
    assert routed.position is None
    assert "WGS84" in routed.location_problem


async def test_a_civic_address_from_asterisk_routes_by_its_gemeinde_and_is_kept_for_the_card(
    service: Service,
) -> None:
    variables = {
        "V112_CALL_ID": "jena-1.2", "V112_CALLER": "+4915112345678", "V112_GEO_HEADER_LEN": "30",
        "V112_GEO_LOCATION": 'lang="de",country="DE",A1="Thüringen",A3="Ronneburg",RD="Markt",HNO="1",PC="07580"',
    }  # fmt: skip
    with service.hub.subscribe() as events:
        await asyncio.wait_for(asterisk_side(service.fastagi.port, variables=variables), 5)
        routed = await asyncio.wait_for(events.get(), 5)
    assert routed.position is None and routed.location_problem == ""
    assert routed.decision.location is not None
    assert (routed.decision.location.source, routed.decision.location.district) == ("civic", "Greiz")
    assert "ZLS gera" in routed.decision.reason  # answered here: the partner does not report in this test
    assert routed.record is not None and routed.record.address == {
        "country": "DE", "A1": "Thüringen", "A3": "Ronneburg", "RD": "Markt", "HNO": "1", "PC": "07580",
    }  # fmt: skip


@pytest.fixture
def rules_with_20ms_budget(tmp_path: Path) -> Path:
    rules_dir = tmp_path / "rules"
    shutil.copytree(Path(__file__).resolve().parents[2] / "rules", rules_dir)
    rules_file = rules_dir / "verbund112.yaml"
    rules_file.write_text(rules_file.read_text().replace("decision_deadline_ms: 150", "decision_deadline_ms: 20"))
    return rules_file


async def test_a_slow_location_source_is_cut_off_by_the_rules_deadline(rules_with_20ms_budget: Path) -> None:
    """Redis that accepts and never answers: the decision budget ends the wait, the call goes local."""
    rules_file = rules_with_20ms_budget
    silent: list[asyncio.StreamWriter] = []

    async def hang(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        silent.append(writer)

    redis_stand_in = await asyncio.start_server(hang, "127.0.0.1", 0)
    port = redis_stand_in.sockets[0].getsockname()[1]
    base = service_settings(rules_file=rules_file)
    settings = base.model_copy(
        update={
            "redis": base.redis.model_copy(update={"url": f"redis://127.0.0.1:{port}/0", "timeout": 2.0}),
            # so that only the rules' deadline (20 ms) can cut the AML read (400 ms) short
            "fastagi": base.fastagi.model_copy(update={"deadline": 2.0}),
        }
    )
    try:
        async with running(settings) as service:
            answer = await asyncio.wait_for(asterisk_side(service.fastagi.port), 5)
            assert answer == {"V112_ROUTE": "local"}
            assert service.fastagi.stats.fallbacks == 1
    finally:
        redis_stand_in.close()
        for writer in silent:
            writer.close()
