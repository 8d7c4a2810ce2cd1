"""The FastAGI server answers every request within its deadline, whatever the peer does.

The peer here is a small stand-in for Asterisk's side of the protocol; the
real Asterisk talks to the same server in tests/integration.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from lab.processes import free_tcp_port
from telephony.fastagi import AgiReply, AgiSession, FastAgiServer
from tests.support import agi_client
from verbund112.service import Service, running
from verbund112.settings import Settings

REQUEST = agi_client.request_text()


async def asterisk_side(port: int, request: str = REQUEST, variables: dict[str, str] | None = None) -> dict[str, str]:
    """Play Asterisk's side of the exchange."""
    variables = variables or {"V112_CALL_ID": "jena-1.1", "V112_CALLER": "+4936411234567"}
    return await agi_client.exchange(port, variables, request)


async def start(server: FastAgiServer) -> FastAgiServer:
    await server.start()
    return server


FALLBACK = AgiReply((("V112_ROUTE", "local"),))


@pytest.fixture
async def server_with() -> AsyncIterator:
    servers: list[FastAgiServer] = []

    async def make(handler, deadline: float = 0.3) -> FastAgiServer:
        server = FastAgiServer(handler, fallback=FALLBACK, host="127.0.0.1", port=0, deadline=deadline)
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


def service_settings(**changes) -> Settings:
    return Settings(
        site="jena",
        ami={"port": free_tcp_port(), "reconnect_max": 0.5},
        redis={"url": f"redis://127.0.0.1:{free_tcp_port()}/0"},
        fastagi={"port": 0, "deadline": 0.3},
        web={
            "port": 0,
            "tokens": {
                "t-admin-0123456789": {"role": "admin", "name": "alice"},
                "t-read-0123456789": {"role": "read", "name": "rita"},
            },
        },
        **changes,
    )


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
