"""The drills' table (lab/drill.py) holds the overload drill of lab/overload.py as a row of its own:
calls, answered, lost (the normal load's calls not answered after the recovery limit), time degraded
(the burst) and time to recover; the columns it does not measure are "-"."""

from __future__ import annotations

from lab import drill, overload

BURST = overload.Load(rate=10, seconds=4, talk_ms=4000, patience_ms=6000)
NORMAL = overload.Load(rate=0.5, seconds=50, talk_ms=1000, patience_ms=6000)  # call n starts at 2 (n - 1) s


def measured(normal_failed: set[int], channels_left: int = 0) -> overload.DrillResult:
    return overload.DrillResult(
        burst=overload.Run(BURST, answered=22, failed=frozenset(range(23, 41))),
        normal=overload.Run(NORMAL, answered=25 - len(normal_failed), failed=frozenset(normal_failed)),
        channels_after=channels_left,
        queue_after=0,
        channels_settled=channels_left,
        settle_s=15.0,
    )


def test_an_overload_that_recovered_in_time_is_a_row_with_nothing_lost() -> None:
    result = drill.overload_result(measured({1, 2, 3}))  # failed in the first 5 s of the normal load

    assert (result.calls, result.answered, result.lost, result.misses) == (65, 22 + 22, 0, [])
    assert (result.degraded_s, result.recover_s) == (4.0, 6.0)
    row = drill.table([result]).splitlines()[1].split()
    assert row == ["7-overload", "65", "44", "-", "-", "-", "-", "0", "4.0", "6.0", "-"]


def test_normal_load_calls_failing_after_30_s_are_lost_and_stuck_channels_are_a_miss() -> None:
    result = drill.overload_result(measured({2, 17, 20}, channels_left=3))  # calls 17 and 20: at 32 s and 38 s

    assert result.lost == 2
    assert len(result.misses) == 3 and "3 channels" in result.misses[-1]
    assert drill.table([result]).splitlines()[1].split()[7] == "2"
