"""The lab's RTP port ranges: never handed out twice while held, reusable once released or expired."""

from __future__ import annotations

import itertools

from lab.processes import free_rtp_base, release_rtp_base


def test_ranges_held_at_once_do_not_overlap() -> None:
    bases = [free_rtp_base(500) for _ in range(8)]
    try:
        spans = sorted((base, base + 500) for base in bases)
        assert all(end <= next_start for (_, end), (next_start, _) in itertools.pairwise(spans))
        assert all(base % 2 == 0 for base in bases)
    finally:
        for base in bases:
            release_rtp_base(base)


def test_released_and_expired_ranges_are_handed_out_again() -> None:
    # 23 x 1000 ports is more than the 22,000 the lab hands out: only reuse makes it fit
    for _ in range(23):
        release_rtp_base(free_rtp_base(1000))
    for _ in range(23):
        free_rtp_base(1000, hold_s=0.0)
