"""The web listener's limits, against a real service on loopback (no lab: Redis and AMI are absent)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.unit.test_fastagi import service_settings
from verbund112.service import Service, running

ADMIN = "t-admin-0123456789"


@pytest.fixture
async def service() -> AsyncIterator[Service]:
    settings = service_settings()
    web = settings.web.model_copy(update={"max_connections": 3, "request_head_timeout_s": 0.5,
                                          "request_body_timeout_s": 0.5})  # fmt: skip
    async with running(settings.model_copy(update={"web": web})) as started:
        yield started


def closed(service: Service, limit: str) -> float:
    return service.registry.get_sample_value("verbund112_web_connections_closed_total", {"limit": limit}) or 0.0


async def response_head(reader: asyncio.StreamReader) -> bytes:
    async with asyncio.timeout(5):
        return await reader.readuntil(b"\r\n\r\n")


async def test_one_connection_over_the_limit_gets_503_and_the_others_are_served(service: Service) -> None:
    held = [await asyncio.open_connection("127.0.0.1", service.web_port) for _ in range(3)]
    reader, writer = await asyncio.open_connection("127.0.0.1", service.web_port)
    assert (await response_head(reader)).startswith(b"HTTP/1.1 503")
    assert closed(service, "max-connections") == 1
    first_reader, first_writer = held[0]
    first_writer.write(f"GET /api/v1/status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN}\r\n\r\n".encode())
    assert (await response_head(first_reader)).startswith(b"HTTP/1.1 200")
    for _, held_writer in [*held, (reader, writer)]:
        held_writer.close()


async def test_a_request_head_sent_byte_by_byte_is_cut_off_and_a_silent_connection_is_closed(
    service: Service,
) -> None:
    slow_reader, slow = await asyncio.open_connection("127.0.0.1", service.web_port)
    silent_reader, silent = await asyncio.open_connection("127.0.0.1", service.web_port)
    async with asyncio.timeout(10):
        for byte in b"GET /api/v1/status HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa":
            if slow_reader.at_eof() or slow.is_closing():
                break
            slow.write(bytes([byte]))
            await asyncio.sleep(0.05)
        assert await slow_reader.read() == b""  # closed by the service, nothing answered
        assert await silent_reader.read() == b""
    assert closed(service, "request-head-timeout") == 1
    assert closed(service, "idle") == 1
    slow.close()
    silent.close()


async def test_a_body_that_does_not_come_gets_408(service: Service) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", service.web_port)
    writer.write(f"PUT /api/v1/rules HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN}\r\n"
                 "Content-Length: 1000\r\n\r\nversion: 1\n".encode())  # fmt: skip
    assert (await response_head(reader)).startswith(b"HTTP/1.1 408")
    assert closed(service, "request-body-timeout") == 1
    writer.close()
