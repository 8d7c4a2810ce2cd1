"""Drill 7, overload (issue 11): a burst above what Jena's Asterisk can take, then normal load.

CI size. Jena's RTP range is narrowed to 60 ports (30 channels with media: 15 calls a desk
answered, at 3 s of talk about 5 calls/s), so a burst of tens of calls is above the knee the
way a bench run past 100 calls/s is on the full range: Asterisk refuses calls (488, no RTP
port) and the waiting callers cannot be offered to a desk. The callers give up after 5 s and
CANCEL, as the telephone network does. `python -m lab.overload` runs it full size.
"""

from __future__ import annotations

import os
from pathlib import Path

from lab import overload

RTP_PORTS = 60
BURST = overload.Load(rate=15, seconds=4, talk_ms=3000, patience_ms=5000)
NORMAL = overload.Load(rate=2, seconds=45, talk_ms=1000, patience_ms=5000)
RECOVERY_LIMIT_S = 30


def test_after_a_burst_above_the_knee_every_call_is_answered_within_30_s_and_no_channel_is_left(
    tmp_path: Path,
) -> None:
    verbund, processes = overload.start_lab(f"test-overload-{os.getpid()}", RTP_PORTS)
    try:
        result = overload.drill(verbund, BURST, NORMAL, tmp_path, settle_s=15)
    finally:
        overload.stop_lab(verbund, processes)
    knee = f"{RTP_PORTS // 4} calls at once ({RTP_PORTS} RTP ports), about {RTP_PORTS / 4 / 3:g} calls/s at 3 s of talk"
    print("\n".join(result.lines(knee)))
    assert result.burst.failed, "the burst did not go above what the site can take"
    late_failures = sorted(n for n in result.normal.failed if result.normal.started_at(n) >= RECOVERY_LIMIT_S)
    assert not late_failures, f"calls of the normal load failed after {RECOVERY_LIMIT_S} s: {late_failures}"
    assert result.recovery_s <= RECOVERY_LIMIT_S
    assert result.queue_after == 0, "callers left in the queue after the normal load"
    assert result.channels_settled == 0, f"{result.channels_settled} channels left {result.settle_s:.0f} s later"
