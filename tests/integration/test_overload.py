"""Drill 7, overload (issue 11): a burst above what Jena can take, then normal load.

CI size. Jena's RTP range is narrowed to 60 ports (30 channels with media) and it has two
desks of one call each, so a burst of 40 calls fills every channel with callers waiting in
the queue: Asterisk refuses the rest (488, no RTP port), the way a bench run past 100 calls/s
does on the full range. The callers give up after 6 s and CANCEL, as the telephone network
does; a caller who vanished without it (sipp's own give-up) kept a channel and a place in the
queue for ever, and with every channel held no desk could be rung any more: no later call
was answered. `python -m lab.overload` runs the drill full size, from the bench's knee.
"""

from __future__ import annotations

import os
from pathlib import Path

from lab import overload

RTP_PORTS = 60
DESKS = 2
BURST = overload.Load(rate=10, seconds=4, talk_ms=4000, patience_ms=6000)
NORMAL = overload.Load(rate=0.5, seconds=50, talk_ms=1000, patience_ms=6000)
RECOVERY_LIMIT_S = 30


def test_after_a_burst_above_the_knee_every_call_is_answered_within_30_s_and_no_channel_is_left(
    tmp_path: Path,
) -> None:
    verbund, processes = overload.start_lab(f"test-overload-{os.getpid()}", RTP_PORTS, DESKS)
    try:
        result = overload.drill(verbund, BURST, NORMAL, tmp_path, settle_s=15)
    finally:
        overload.stop_lab(verbund, processes)
    print("\n".join(result.lines(f"{DESKS} desks and {RTP_PORTS // 2} channels with media ({RTP_PORTS} RTP ports)")))
    assert result.burst.failed, "the burst did not go above what the site can take"
    late_failures = sorted(n for n in result.normal.failed if result.normal.started_at(n) >= RECOVERY_LIMIT_S)
    assert not late_failures, f"calls of the normal load failed after {RECOVERY_LIMIT_S} s: {late_failures}"
    assert result.recovery_s <= RECOVERY_LIMIT_S
    assert result.queue_after == 0, "callers left in the queue after the normal load"
    assert result.channels_settled == 0, f"{result.channels_settled} channels left {result.settle_s:.0f} s later"
