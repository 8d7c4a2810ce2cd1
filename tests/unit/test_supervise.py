"""Feature loops survive their own bugs; writes wait in an outbox until the store takes them."""

from __future__ import annotations

import asyncio
import contextlib

import prometheus_client as prom
import pytest

from verbund112.features.supervise import Outbox, Supervisor
from verbund112.store import NotReplicated, StoreError


async def test_a_loop_that_dies_is_restarted_counted_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    supervisor = Supervisor(prom.CollectorRegistry(), first_delay=0.001, max_delay=0.002)
    runs = 0

    async def buggy() -> None:
        nonlocal runs
        runs += 1
        if runs < 3:
            raise KeyError("a bug")

    async with asyncio.timeout(5):
        await supervisor.run("buggy", buggy)
    assert runs == 3
    assert supervisor.restarts.labels("buggy")._value.get() == 2
    assert [r.levelname for r in caplog.records if "loop buggy died" in r.message] == ["ERROR", "ERROR"]


async def test_a_loop_that_ends_is_not_restarted() -> None:
    supervisor = Supervisor(prom.CollectorRegistry(), first_delay=0.001)
    runs = 0

    async def done() -> None:
        nonlocal runs
        runs += 1

    await supervisor.run("done", done)
    assert runs == 1
    assert supervisor.restarts.labels("done")._value.get() == 0


async def test_a_cancelled_loop_is_not_restarted() -> None:
    supervisor = Supervisor(prom.CollectorRegistry(), first_delay=0.001)
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(supervisor.run("forever", forever))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert supervisor.restarts.labels("forever")._value.get() == 0


async def test_an_outbox_keeps_writes_in_order_until_the_store_takes_them() -> None:
    written: list[int] = []
    store_up = asyncio.Event()
    all_written = asyncio.Event()
    refused_thrice = asyncio.Event()
    refusals = 0

    async def write(item: int) -> None:
        nonlocal refusals
        if not store_up.is_set():
            refusals += 1
            if refusals == 3:
                refused_thrice.set()
            raise StoreError("down")
        written.append(item)
        if len(written) == 3:
            all_written.set()

    dropped = prom.Counter("dropped", "", ["outbox"], registry=prom.CollectorRegistry())
    outbox: Outbox[int] = Outbox("test", write, dropped)
    outbox._retry_delay = 0.001
    for item in (1, 2, 3):
        outbox.put(item)
    task = asyncio.create_task(outbox.run())
    async with asyncio.timeout(5):
        await refused_thrice.wait()  # the store is down for a while: nothing written, nothing lost
    assert written == []
    assert len(outbox) == 2  # the first is held by the writer, retried
    store_up.set()
    async with asyncio.timeout(5):
        await all_written.wait()
    assert written == [1, 2, 3]
    task.cancel()


async def test_a_full_outbox_refuses_the_newest_write_and_counts_it() -> None:
    async def write(item: int) -> None:
        raise AssertionError("not reached")

    dropped = prom.Counter("dropped", "", ["outbox"], registry=prom.CollectorRegistry())
    outbox: Outbox[int] = Outbox("test", write, dropped, maxsize=2)
    for item in (1, 2, 3):
        outbox.put(item)
    assert len(outbox) == 2
    assert dropped.labels("test")._value.get() == 1


async def test_an_outbox_is_drained_at_stop_when_the_store_answers() -> None:
    written: list[int] = []

    async def write(item: int) -> None:
        written.append(item)

    outbox: Outbox[int] = Outbox("test", write, prom.Counter("d", "", ["outbox"], registry=prom.CollectorRegistry()))
    outbox.put(7)
    outbox.put(8)
    await outbox.drain(1.0)
    assert written == [7, 8]


class ReplicaAway:
    """A store whose master takes every write but whose replica acknowledges none until it is back."""

    def __init__(self) -> None:
        self.replica_up = False
        self.writes: list[str] = []
        self.master_has: set[str] = set()
        self.replicated: set[str] = set()
        self.written = asyncio.Event()

    async def write(self, item: str) -> None:
        self.writes.append(item)
        self.master_has.add(item)  # idempotent, as the store's writes are
        self.written.set()
        if not self.replica_up:
            raise NotReplicated(None)
        self.replicated |= self.master_has


async def test_an_outbox_writes_again_what_no_replica_acknowledged_until_one_does() -> None:
    store = ReplicaAway()
    outbox: Outbox[str] = Outbox("test", store.write, prom.Counter("d", "d", ["outbox"]), confirm_every=0.01)
    runner = asyncio.create_task(outbox.run())
    try:
        outbox.put("call-1")
        await outbox.write_now("call-2")  # for an answer now: done once the master has it
        async with asyncio.timeout(5):
            while outbox.unconfirmed < 2:
                store.written.clear()
                await store.written.wait()
        assert store.master_has == {"call-1", "call-2"} and store.replicated == set()
        store.master_has.clear()  # the master died unreplicated; the new one has neither
        store.replica_up = True
        async with asyncio.timeout(5):
            while outbox.unconfirmed:
                store.written.clear()
                await store.written.wait()
        assert store.replicated == {"call-1", "call-2"}
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
