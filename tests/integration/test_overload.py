"""Drill 7, overload (issue 11): a burst above what Jena can take, then normal load.

CI size (`overload.CI`). Jena's RTP range is narrowed to 60 ports (30 channels with media) and
it has two desks of one call each, so a burst of 40 calls fills every channel with callers
waiting in the queue: Asterisk refuses the rest (488, no RTP port), the way a bench run past
100 calls/s does on the full range. The callers give up after 6 s and CANCEL, as the telephone network
does; a caller who vanished without it (sipp's own give-up) kept a channel and a place in the
queue for ever, and with every channel held no desk could be rung any more: no later call
was answered. `python -m lab.overload` runs the drill full size, from the bench's knee.
"""

from __future__ import annotations

import os
from pathlib import Path

from lab import overload


def test_after_a_burst_above_the_knee_every_call_is_answered_within_30_s_and_no_channel_is_left(
    tmp_path: Path,
) -> None:
    result, knee = overload.run(overload.CI, tmp_path, f"test-overload-{os.getpid()}")
    print("\n".join(result.lines(knee)))
    assert result.burst.failed, "the burst did not go above what the site can take"
    late_failures = overload.late_failures(result)
    assert not late_failures, f"calls of the normal load failed after {overload.RECOVERY_LIMIT_S:g} s: {late_failures}"
    assert result.recovery_s <= overload.RECOVERY_LIMIT_S
    assert result.queue_after == 0, "callers left in the queue after the normal load"
    assert result.channels_settled == 0, f"{result.channels_settled} channels left {result.settle_s:.0f} s later"
