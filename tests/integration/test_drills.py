"""The fault drills (lab/drill.py) at CI size: each one a burst of calls into both sites while a fault
hits, against a lab of its own. Asserted: the counts and nothing lost; the timings are printed only.

Each drill runs once (the first test that needs it); its two tests read the same result: every call
reached a human or the callback list and every accepted AML fix was kept, and every answered call's
dispatcher got its card.
"""

from __future__ import annotations

import pytest

from lab import drill

pytestmark = pytest.mark.lab
LOAD = drill.SIZES["ci"]
_results: dict[str, drill.Result] = {}


def drill_named(name: str) -> drill.Drill:
    return next(d for d in drill.DRILLS if d.name == name)


async def result_of(name: str) -> drill.Result:
    if name not in _results:
        _results[name] = await drill.run_drill(drill_named(name), drill_named(name).sizes["ci"])
        print(f"\n{drill.table([_results[name]])}")  # the timings go into the report, never into an assertion
    return _results[name]


def assert_every_call_reached_a_human_or_the_callback_list(result: drill.Result) -> None:
    call_misses = [miss for miss in result.misses if "card" not in miss]
    assert call_misses == []
    assert result.calls == 2 * drill_named(result.drill).sizes["ci"].calls_per_site
    assert result.answered + result.abandoned == result.calls  # every call one or the other, exactly once
    assert result.abandoned_listed == result.abandoned > 0
    assert result.aml_kept == result.aml_accepted > 0


def assert_every_answered_call_got_its_card(result: drill.Result) -> None:
    assert result.misses == []
    assert result.cards == result.answered
    assert result.lost == 0


async def test_baseline_without_a_fault_every_call_reaches_a_human_or_the_callback_list() -> None:
    result = await result_of("baseline")
    assert_every_call_reached_a_human_or_the_callback_list(result)
    assert result.redialled == 0
    assert result.aml_accepted == sum(1 for _, call in drill.plan_calls(LOAD, 1) if call.aml is not None)


async def test_baseline_without_a_fault_every_answered_call_gets_its_card() -> None:
    assert_every_answered_call_got_its_card(await result_of("baseline"))


async def test_drill1_redis_master_killed_every_call_reaches_a_human_or_the_callback_list() -> None:
    result = await result_of("1-redis-master-killed")
    assert result.observed["new_master"] != result.observed["killed"]  # the sentinels failed over
    assert_every_call_reached_a_human_or_the_callback_list(result)
    assert result.redialled == 0  # the calls never depend on the store


async def test_drill1_redis_master_killed_every_answered_call_gets_its_card() -> None:
    assert_every_answered_call_got_its_card(await result_of("1-redis-master-killed"))


async def test_drill2_jena_service_killed_every_call_reaches_a_human_or_the_callback_list() -> None:
    result = await result_of("2-jena-killed")
    assert_every_call_reached_a_human_or_the_callback_list(result)
    assert result.redialled == 0  # the dialplan carries the calls while the service is away


async def test_drill2_jena_service_killed_every_answered_call_gets_its_card() -> None:
    assert_every_answered_call_got_its_card(await result_of("2-jena-killed"))


async def test_drill3_jena_service_hung_calls_fall_back_and_gera_stops_sending() -> None:
    result = await result_of("3-jena-hung")
    assert result.observed["gera_saw_jena_gone"]
    assert_every_call_reached_a_human_or_the_callback_list(result)
    assert result.redialled == 0  # FastAGI's deadline passed, the dialplan took the calls on


async def test_drill3_jena_service_hung_every_answered_call_gets_its_card() -> None:
    assert_every_answered_call_got_its_card(await result_of("3-jena-hung"))


async def test_drill4_jena_ami_cut_every_call_reaches_a_human_or_the_callback_list() -> None:
    result = await result_of("4-ami-cut")
    assert_every_call_reached_a_human_or_the_callback_list(result)
    assert result.redialled == 0  # the calls themselves never notice an AMI cut


async def test_drill4_jena_ami_cut_every_answered_call_gets_its_card() -> None:
    assert_every_answered_call_got_its_card(await result_of("4-ami-cut"))


async def test_drill5_gera_lost_jena_takes_every_call() -> None:
    result = await result_of("5-gera-lost")
    assert result.observed["gera_redis_was"] == "replica"  # the lab starts with Jena's node as master
    assert_every_call_reached_a_human_or_the_callback_list(result)


async def test_drill5_gera_lost_every_answered_call_gets_its_card() -> None:
    assert_every_answered_call_got_its_card(await result_of("5-gera-lost"))


async def test_drill6_link_cut_each_site_answers_its_calls_and_the_split_is_shown() -> None:
    result = await result_of("6-link-cut")
    seen = result.observed
    assert seen["link_silent"]  # the cut is a cut: Gera's namespace no longer reaches Jena's Redis
    # both supervisors see the partner gone (status and verbund112_partner_up)
    for site in ("jena", "gera"):
        assert seen[f"{site}_at_cut"]["partner_up"] == 0
        assert seen[f"{site}_at_cut"]["partner_reporting"] is False
    # no split brain: the witness sides with the master's site, Gera's replica is never promoted
    assert seen["redis_during_cut"]["masters_at_once"] == ["1"]
    assert seen["redis_during_cut"]["sentinels_name"] == ["jena"]
    assert (seen["jena_at_cut"]["store_degraded"], seen["gera_at_cut"]["store_degraded"]) == (False, True)
    assert_every_call_reached_a_human_or_the_callback_list(result)
    assert result.redialled == 0  # each site answered its own calls: the carrier never had to redial


async def test_drill6_link_cut_calls_on_the_trunk_reach_a_desk_and_nothing_is_moved_twice() -> None:
    result = await result_of("6-link-cut")
    on_trunk = result.observed["on_trunk_at_cut"]
    assert on_trunk  # the cut came while calls were handed over the trunk
    assert [what for what in on_trunk.values() if "answered, card at" not in what and "abandoned" not in what] == []
    assert result.observed["moves"] > 0  # the overflow moved calls, before the cut or after the link returned
    assert_every_answered_call_got_its_card(result)  # misses include a call moved twice or carded at both sites
