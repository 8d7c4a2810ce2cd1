"""The fault drills (lab/drill.py) at CI size: each one a burst of calls into both sites while a fault
hits, against a lab of its own. Asserted: nothing lost and the counts; the timings are printed only."""

from __future__ import annotations

import pytest

from lab import drill

pytestmark = pytest.mark.lab
LOAD = drill.SIZES["ci"]


def by_name(name: str) -> drill.Drill:
    return next(d for d in drill.DRILLS if d.name == name)


def assert_nothing_lost(result: drill.Result) -> None:
    print(f"\n{drill.table([result])}")  # the timings go into the report, never into an assertion
    assert result.misses == [], result.misses
    assert result.lost == 0
    assert result.calls == 2 * LOAD.calls_per_site
    assert result.answered + result.abandoned == result.calls  # every call one or the other, exactly once
    assert result.abandoned_listed == result.abandoned > 0
    assert result.cards == result.answered
    assert result.aml_kept == result.aml_accepted > 0


async def test_baseline_without_a_fault_every_call_is_answered_with_a_card_or_listed() -> None:
    result = await drill.run_drill(by_name("baseline"), LOAD)
    assert_nothing_lost(result)
    assert result.redialled == 0
    assert result.aml_accepted == sum(1 for _, call in drill.plan_calls(LOAD, 1) if call.aml is not None)


async def test_drill4_jena_ami_cut_under_load_loses_nothing() -> None:
    result = await drill.run_drill(by_name("4-ami-cut"), LOAD)
    assert_nothing_lost(result)
    assert result.redialled == 0  # the calls themselves never notice an AMI cut


async def test_drill5_gera_lost_under_load_jena_takes_every_call() -> None:
    result = await drill.run_drill(by_name("5-gera-lost"), LOAD)
    assert_nothing_lost(result)


async def test_drill2_jena_service_killed_under_load_is_restarted_and_loses_nothing() -> None:
    result = await drill.run_drill(by_name("2-jena-killed"), LOAD)
    assert_nothing_lost(result)


async def test_drill3_jena_service_hung_under_load_calls_fall_back_gera_stops_sending_nothing_lost() -> None:
    result = await drill.run_drill(by_name("3-jena-hung"), LOAD)
    assert result.observed["gera_saw_jena_gone"]
    assert_nothing_lost(result)
