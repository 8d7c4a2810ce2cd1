"""Long-lived loops that survive their own bugs, and writes that wait for Redis (and its replica) in an outbox."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import prometheus_client as prom

from verbund112.store import NotReplicated, StoreError

log = logging.getLogger(__name__)

T = TypeVar("T")
HEALTHY_RUN_S = 60.0  # a loop that ran this long before it died starts again at the first delay


class Supervisor:
    """Restarts a feature's loop that died, with back-off; the death is an ERROR line and a metric."""

    def __init__(self, registry: prom.CollectorRegistry, first_delay: float = 0.2, max_delay: float = 5.0) -> None:
        self.restarts = prom.Counter(
            "verbund112_loop_restarts", "feature loops that died and were restarted", ["loop"], registry=registry
        )
        self.first_delay = first_delay
        self.max_delay = max_delay

    async def run(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        """Run ``loop`` until it returns (done) or is cancelled; restart it when it raises."""
        delay = self.first_delay
        while True:
            started = time.monotonic()
            try:
                await loop()
                return
            except Exception:
                log.exception("loop %s died; restarting it in %.1f s", name, delay)
            self.restarts.labels(name).inc()
            if time.monotonic() - started > HEALTHY_RUN_S:
                delay = self.first_delay
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_delay)


class Outbox(Generic[T]):
    """Writes to the store that must not hold up their producer: queued, written in order, drained at stop.

    An item counts as written once a replica has it too: one the store wrote on the master
    only (NotReplicated) is kept and written again (the writes are idempotent) until a
    replica acknowledges it, so a failover right after the write loses nothing. Full
    (Redis down for long): the newest write is refused, logged and counted.
    """

    def __init__(self, name: str, write: Callable[[T], Awaitable[object]], dropped: prom.Counter,
                 maxsize: int = 10000, confirm_every: float = 1.0) -> None:  # fmt: skip
        self.name = name
        self._write = write
        self._dropped = dropped
        self._queue: asyncio.Queue[T] = asyncio.Queue(maxsize)
        self._unconfirmed: collections.deque[T] = collections.deque()  # oldest first
        self._maxsize = maxsize
        self._retry_delay = 0.2
        self._confirm_every = confirm_every

    def put(self, item: T) -> None:
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self._dropped.labels(self.name).inc()
            log.error("%s not stored: the outbox is full (Redis unreachable for long)", self.name)

    def __len__(self) -> int:
        return self._queue.qsize()

    @property
    def unconfirmed(self) -> int:
        """Items on the master only, to be written again until a replica has them."""
        return len(self._unconfirmed)

    async def write_now(self, item: T) -> None:
        """Write at once (for a caller that answers someone): done when the master has it; kept
        and written again here until a replica has it too. Raises StoreError if not written."""
        try:
            await self._write(item)
        except NotReplicated:
            self._keep(item)

    def _keep(self, item: T) -> None:
        if len(self._unconfirmed) >= self._maxsize:
            self._unconfirmed.popleft()
            self._dropped.labels(self.name).inc()
            log.error("%s: the oldest write no replica acknowledged is no longer repeated (too many)", self.name)
        self._unconfirmed.append(item)

    async def run(self) -> None:
        """Write queued items; repeat those no replica acknowledged yet."""
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._confirm_loop())
            await self._write_loop()

    async def _write_loop(self) -> None:
        """An item Redis refused is retried (Redis may come back)."""
        while True:
            item = await self._queue.get()
            while True:
                try:
                    await self._write(item)
                    break
                except NotReplicated:
                    self._keep(item)
                    break
                except StoreError as exc:
                    log.warning("%s not stored yet (%s); retrying", self.name, exc)
                    await asyncio.sleep(self._retry_delay)
            self._queue.task_done()

    async def _confirm_loop(self) -> None:
        while True:
            await asyncio.sleep(self._confirm_every)
            await self.confirm()

    async def confirm(self) -> None:
        """Write the unacknowledged items again, oldest first; stop at the first no replica acknowledges."""
        while self._unconfirmed:
            item = self._unconfirmed[0]
            try:
                await self._write(item)
            except StoreError:
                return  # NotReplicated included: the replica is still away; next round
            if self._unconfirmed and self._unconfirmed[0] is item:
                self._unconfirmed.popleft()
            log.info("%s: a write no replica had acknowledged is on a replica now", self.name)

    async def drain(self, within: float) -> None:
        """At stop: the last items written, if Redis answers within the time."""
        with contextlib.suppress(TimeoutError, StoreError):
            async with asyncio.timeout(within):
                while not self._queue.empty():
                    with contextlib.suppress(NotReplicated):
                        await self._write(self._queue.get_nowait())
                await self.confirm()
