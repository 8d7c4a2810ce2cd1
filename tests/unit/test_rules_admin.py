"""The rules admin checks rules off the event loop, under a deadline (fakes at the holder and store seams)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from routing.rules import RulesError
from verbund112.features.rules_admin import RulesAdmin


class StuckHolder:
    """A rules check that does not come back until released (a huge file, a slow disk)."""

    rules = None
    last_error = None

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.refusals: list[RulesError] = []

    def check(self, text: str | None) -> Any:
        self.started.set()
        self.release.wait(30)
        raise RulesError(["the check finished after all"])

    def refused(self, problem: RulesError) -> None:
        self.refusals.append(problem)


class Audit:
    def __init__(self) -> None:
        self.entries: list[Any] = []

    async def append_audit(self, entry: Any) -> None:
        self.entries.append(entry)


async def test_a_check_that_overruns_is_refused_while_the_event_loop_keeps_running() -> None:
    holder, audit = StuckHolder(), Audit()
    admin = RulesAdmin(site="jena", holder=holder, store=audit, check_within=0.5)  # type: ignore[arg-type]
    try:
        change = asyncio.create_task(admin.change("alice", text="version: 1\n"))
        await asyncio.to_thread(holder.started.wait, 10)
        # the check is stuck in its thread, and this coroutine runs on the loop all the same
        assert not change.done()
        with pytest.raises(RulesError, match=r"took longer than 0\.5 s"):
            await change
        assert [entry.result for entry in audit.entries] == ["refused"]
        assert "took longer" in str(holder.refusals[0])
    finally:
        holder.release.set()
        admin.close()
