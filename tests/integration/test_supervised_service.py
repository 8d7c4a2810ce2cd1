"""A real `verbund112 serve` (a subprocess) under the lab's supervisor, against the real lab.

kill -9: the supervisor restarts it and the next call is routed by it. kill -STOP: a call
placed while it hangs still reaches a desk (the dialplan's FastAGI deadline), the missed
watchdog gets it killed and restarted, and the next call is routed by it again. /healthz and
/readyz answer without a token; /readyz is 503 while AMI is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from lab import lab
from lab.processes import LabError, free_tcp_port, wait_until
from tests.conftest import place_call

pytestmark = pytest.mark.lab

JENA_CALLER = "+4936411234567"


def readyz(verbund: lab.Verbund, site: str) -> tuple[int, dict[str, Any]]:
    url = f"http://127.0.0.1:{verbund.ports[site].web}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read())


def fastagi_stats(verbund: lab.Verbund, site: str) -> dict[str, int]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{verbund.ports[site].web}/api/v1/status",
        headers={"Authorization": f"Bearer {verbund.read_token}"},
    )
    with urllib.request.urlopen(request, timeout=2) as response:
        return dict(json.loads(response.read())["fastagi"])


class MessagesLog:
    """Asterisk's messages.log from a mark on: what the dialplan said about the calls since."""

    def __init__(self, site: lab.AsteriskSite) -> None:
        self.path = site.log_file
        self.mark = self.path.stat().st_size

    def since(self) -> str:
        with self.path.open("rb") as log:
            log.seek(self.mark)
            return log.read().decode(errors="replace")


@pytest.fixture
async def supervised(verbund: lab.Verbund, tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    started: list[lab.SupervisedService] = []

    async def start(site: str, **options: Any) -> lab.SupervisedService:
        service = await asyncio.to_thread(lab.start_supervised_service, verbund, site, tmp_path, **options)
        started.append(service)
        return service

    yield start
    for service in started:
        await asyncio.to_thread(service.stop)
        every_child = [event["pid"] for event in service.events.read() if event["event"] == "started"]
        assert every_child
        assert all([await asyncio.to_thread(_gone, pid) for pid in every_child])  # nothing left behind


def _gone(pid: int) -> bool:
    """No such process (or only its zombie)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


async def call_answered_at_jena(verbund: lab.Verbund, desks: lab.Desks) -> None:
    desks.drain()
    seen = len(desks.seen)
    assert await place_call(verbund, "jena", JENA_CALLER, talk_ms=300) == 0
    answered = await asyncio.to_thread(
        desks.wait_for, lambda e: e in desks.seen[seen:] and e.get("event") == "answered", 10
    )
    assert answered["caller"] == JENA_CALLER


async def test_a_killed_service_is_restarted_and_routes_the_next_call(verbund, supervised, start_desks) -> None:
    service = await supervised("jena")
    desks = await start_desks("jena", ["jena-d1"])
    killed = service.pid
    assert killed is not None
    killed_at = time.time()
    os.kill(killed, signal.SIGKILL)

    exited = await asyncio.to_thread(service.events.wait_for, lambda e: e["event"] == "exited", 15)
    assert exited["pid"] == killed
    ready = await asyncio.to_thread(service.events.wait_for, lambda e: e["event"] == "ready" and e["pid"] != killed, 30)
    print(f"kill -9 -> READY=1 of the new service: {ready['time'] - killed_at:.2f} s")
    await asyncio.to_thread(wait_until, lambda: readyz(verbund, "jena")[0] == 200, 15, "AMI logged in again")
    print(f"kill -9 -> /readyz 200: {time.time() - killed_at:.2f} s")

    log = MessagesLog(verbund.site("jena"))
    await call_answered_at_jena(verbund, desks)
    stats = fastagi_stats(verbund, "jena")  # the new process's own counters
    assert stats["answered"] == 1
    assert stats["fallbacks"] == 0
    assert "AGISTATUS=SUCCESS route=local" in log.since()


async def test_a_hung_service_is_killed_by_the_watchdog_and_calls_reach_a_desk_meanwhile(
    verbund, supervised, start_desks
) -> None:
    # a watchdog of 8 s: the hang lasts at least 4 s, longer than the dialplan's FastAGI deadline (2 s)
    service = await supervised("jena", watchdog_s=8.0)
    desks = await start_desks("jena", ["jena-d1"])
    hung = service.pid
    assert hung is not None
    log = MessagesLog(verbund.site("jena"))
    stopped_at = time.time()
    os.kill(hung, signal.SIGSTOP)
    try:
        await call_answered_at_jena(verbund, desks)  # while the service hangs
        during = log.since()
        assert "FastAGI deadline passed, local queue" in during
        assert "AGISTATUS=SUCCESS" not in during

        missed = await asyncio.to_thread(service.events.wait_for, lambda e: e["event"] == "watchdog-missed", 30)
        assert missed["pid"] == hung
        ready = await asyncio.to_thread(
            service.events.wait_for, lambda e: e["event"] == "ready" and e["pid"] != hung, 30
        )
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(hung, signal.SIGCONT)
    print(
        f"kill -STOP -> watchdog kill: {missed['time'] - stopped_at:.2f} s, "
        f"-> READY=1 of the new service: {ready['time'] - stopped_at:.2f} s"
    )
    await asyncio.to_thread(wait_until, lambda: readyz(verbund, "jena")[0] == 200, 15, "AMI logged in again")

    log = MessagesLog(verbund.site("jena"))
    await call_answered_at_jena(verbund, desks)
    stats = fastagi_stats(verbund, "jena")
    assert stats["answered"] == 1
    assert stats["fallbacks"] == 0
    assert "AGISTATUS=SUCCESS route=local" in log.since()


class CuttableLink:
    """A TCP relay in front of Asterisk's AMI that the test can cut and mend (a network cut).

    Use it with `async with`: it is closed however the test ends. A server left open when the
    test's loop closes hangs uvloop's close for ever (seen: the whole suite stuck after a failure).
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_tcp_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> CuttableLink:
        await self.mend()
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._server is not None:
            await self.cut()

    async def mend(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port, reuse_address=True)

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        async with asyncio.timeout(10):
            await self._server.wait_closed()
        self._server = None

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5):
                upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except (OSError, TimeoutError):
            writer.transport.abort()
            return
        self._writers |= {writer, upstream_writer}

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.transport.abort()

        await asyncio.gather(pump(reader, upstream_writer), pump(upstream_reader, writer))
        self._writers -= {writer, upstream_writer}


async def test_healthz_and_readyz_need_no_token_and_readyz_is_503_while_ami_is_down(
    verbund: lab.Verbund, start_service
) -> None:
    async with CuttableLink(verbund.site("jena").values.ami_port) as link:
        await start_service("jena", ami={"port": link.port})
        healthz = f"http://127.0.0.1:{verbund.ports['jena'].web}/healthz"
        answers: list[tuple[int, dict[str, Any]]] = []

        def until(
            status: int, within: float, settled: Callable[[dict[str, Any]], bool] = lambda _: True
        ) -> dict[str, Any]:
            def answered() -> bool:
                answers.append(readyz(verbund, "jena"))
                return answers[-1][0] == status and settled(answers[-1][1])

            try:
                wait_until(answered, within, f"/readyz {status}")
            except LabError as late:
                raise AssertionError(f"{late}; the last answer: {answers[-1] if answers else None}") from None
            return answers[-1][1]

        def alive() -> int:
            with urllib.request.urlopen(healthz, timeout=2) as response:
                return int(response.status)

        assert await asyncio.to_thread(alive) == 200
        # ready (200) comes with AMI; the store may join a moment later (ready, degraded): wait for all up
        up = await asyncio.to_thread(until, 200, 20, lambda answer: not answer["degraded"])
        assert up == {"ready": True, "parts": {"ami": "up", "fastagi": "up", "rules": "up", "store": "up"},
                      "down": [], "degraded": []}  # fmt: skip

        await link.cut()
        down = await asyncio.to_thread(until, 503, 10)  # the AMI ping goes unanswered within a second or two
        assert down["down"] == ["ami"]
        assert down["parts"]["ami"] == "down"
        assert await asyncio.to_thread(alive) == 200  # alive all the same

        await link.mend()
        assert (await asyncio.to_thread(until, 200, 15))["down"] == []
