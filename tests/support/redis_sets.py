"""A Redis Sentinel set of a test's own (not the session lab's), started and stopped around it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from lab.processes import RedisSentinelSet


@contextlib.contextmanager
def started(redis_set: RedisSentinelSet) -> Iterator[RedisSentinelSet]:
    """Starts the set; on the way out stops it and fails if any of its processes is left behind."""
    redis_set.start()
    try:
        yield redis_set
    finally:
        processes = [p.pid for p in [*redis_set.nodes.values(), *redis_set.sentinels.values()] if p.pid]
        redis_set.stop()
        assert not [pid for pid in processes if Path(f"/proc/{pid}").exists()], "a Redis process left behind"
