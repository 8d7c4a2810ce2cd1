"""Waiting for a condition with a deadline (never sleep-and-hope)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


async def eventually(check: Callable[[], bool], what: str, within: float = 5.0) -> None:
    """Return once `check()` holds; fail the test if it does not within `within` seconds."""
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"not {what} within {within} s"
        await asyncio.sleep(0.01)
