"""Fixtures: one per real component, each cleaning up after itself.

The lab (Redis + Asterisk jena + Asterisk gera in the Debian sid chroot) is
started once per test session; services and dispatcher desks per test.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

import pytest
import uvloop

from lab import lab
from verbund112.features.hub import ServiceEvent
from verbund112.service import Service, running
from verbund112.settings import Settings

E = TypeVar("E")


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Callable[[], Any]]:
    """Async tests run on the loop `verbund112 serve` runs on (uvloop), not asyncio's own."""
    return {"uvloop": uvloop.new_event_loop}


@pytest.fixture(scope="session")
def verbund() -> Iterator[lab.Verbund]:
    """Redis and both Asterisk sites (builds the root filesystem on first use)."""
    started = lab.start_verbund(f"test-{os.getpid()}")
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(autouse=True)
def lab_rules_restored(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test that uploads rules (an admin's change is written over the rules file) leaves the
    session lab's file as it found it: the next test must not run with, say, the overflow off."""
    if "verbund" not in request.fixturenames:
        yield
        return
    rules_file = request.getfixturevalue("verbund").rules_file
    before = rules_file.read_text()
    yield
    if rules_file.read_text() != before:
        rules_file.write_text(before)


def settings_for(verbund: lab.Verbund, site: str, **changes: Any) -> Settings:
    values = verbund.service_settings(site)
    for key, value in changes.items():
        if isinstance(value, dict):
            values[key] = {**values.get(key, {}), **value}
        else:
            values[key] = value
    return Settings(**values)


@pytest.fixture
async def start_service(verbund: lab.Verbund) -> AsyncIterator[Callable[..., Any]]:
    """start_service("jena", **setting_changes) -> a running Service; stopped after the test."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(site: str, **changes: Any) -> Service:
            service = await stack.enter_async_context(running(settings_for(verbund, site, **changes)))
            async with asyncio.timeout(10):
                await service.ami.connected.wait()
            return service

        yield start


@pytest.fixture
async def start_desks(verbund: lab.Verbund) -> AsyncIterator[Callable[..., Any]]:
    """start_desks("jena", ["jena-d1"]) -> registered, available pyVoIP desks."""
    started: list[lab.Desks] = []

    async def start(site: str, seats: list[str]) -> lab.Desks:
        desks = lab.Desks(verbund.site(site), seats)
        started.append(desks)
        await asyncio.to_thread(desks.wait_registered)
        return desks

    yield start
    for desks in started:
        await asyncio.to_thread(desks.stop)
    # the next test must find the seats unregistered (unavailable) again
    for desks in started:
        await asyncio.to_thread(_wait_unavailable, desks)


def _wait_unavailable(desks: lab.Desks) -> None:
    from lab.processes import wait_until

    def unavailable() -> bool:
        shown = desks.site.cli(f"queue show {desks.site.values.queue}")
        return not any(seat in line and "Not in use" in line for line in shown.splitlines() for seat in desks.seats)

    wait_until(unavailable, 10, "desks unregistered")


async def next_event(
    events: asyncio.Queue[ServiceEvent], kind: type[E], predicate: Callable[[E], bool] = lambda _: True,
    within: float = 30.0,
) -> E:  # fmt: skip
    """The next event of a kind that matches; fails the test after `within` seconds."""
    async with asyncio.timeout(within):
        while True:
            event = await events.get()
            if isinstance(event, kind) and predicate(event):
                return event


async def place_call(verbund: lab.Verbund, site: str, caller: str, **options: Any) -> int:
    """A complete 112 call through sipp; returns sipp's exit code (0: answered and hung up cleanly)."""
    process = lab.sipp_call(verbund.site(site).values.sip_port, caller, **options)
    _, errors = await asyncio.to_thread(process.communicate, None, 150)
    if process.returncode != 0:
        print(f"sipp exit {process.returncode}: {errors.decode(errors='replace')[-3000:]}")
    return process.returncode
