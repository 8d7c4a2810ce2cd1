"""The bench's CPU column: a process's user + system CPU seconds as the kernel counts them."""

from __future__ import annotations

import os
import time

from lab.bench import process_cpu_seconds


def test_process_cpu_seconds_counts_the_cpu_a_process_burns() -> None:
    before = process_cpu_seconds(os.getpid())
    end = time.process_time() + 0.2  # CPU time, not wall time: busy for 0.2 s of CPU
    while time.process_time() < end:
        pass
    # /proc counts in clock ticks (10 ms): a tick's rounding either side
    assert process_cpu_seconds(os.getpid()) - before >= 0.18
