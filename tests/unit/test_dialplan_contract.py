"""The service and the dialplan agree: every name of telephony.dialplan is spelled the same in the template."""

from __future__ import annotations

from pathlib import Path

import pytest

from routing.decision import Route
from telephony import dialplan

TEMPLATES = Path(__file__).resolve().parents[2] / "asterisk-config" / "templates"
EXTENSIONS = (TEMPLATES / "extensions.conf.j2").read_text()

VARIABLES = [value for name, value in vars(dialplan).items() if name.isupper() and str(value).startswith("V112_")]


def test_the_contract_names_every_variable_the_service_uses() -> None:
    assert len(VARIABLES) >= 10


@pytest.mark.parametrize("variable", VARIABLES)
def test_each_variable_is_in_the_dialplan(variable: str) -> None:
    assert variable in EXTENSIONS


@pytest.mark.parametrize("value", dialplan.ROUTE_VALUES)
def test_each_route_reply_is_a_branch_of_the_dialplan_and_a_decision(value: str) -> None:
    assert value in {route.value for route in Route}
    if value != dialplan.ROUTE_LOCAL:  # local is what anything else means
        assert f'"${{{dialplan.ROUTE}}}" = "{value}"' in EXTENSIONS


def test_the_route_script_is_the_one_the_dialplan_asks() -> None:
    assert f"/{dialplan.ROUTE_SCRIPT}," in EXTENSIONS


def test_the_inter_site_channels_are_the_trunk_endpoint_of_the_dialplan() -> None:
    endpoint = dialplan.INTERSITE_CHANNEL_PREFIX.removeprefix("PJSIP/").rstrip("-")
    assert f"@{endpoint}," in EXTENSIONS


@pytest.mark.parametrize(("partner", "back", "info"), [(1, 1, "001001"), (12, 3, "012003"), (1500, 999, "999999")])
def test_withdraw_info_is_two_three_digit_places(partner: int, back: int, info: str) -> None:
    assert dialplan.withdraw_info(partner, back) == info
    assert dialplan.parse_withdraw_info(info) == (min(partner, 999), back)
    # v112-overflow reads exactly these substrings
    assert "${V112_INFO:0:3}" in EXTENSIONS and "${V112_INFO:3:3}" in EXTENSIONS


@pytest.mark.parametrize("info", ["", "12345", "1234567", "12a456"])
def test_malformed_withdraw_info_is_refused(info: str) -> None:
    with pytest.raises(ValueError):
        dialplan.parse_withdraw_info(info)


@pytest.mark.parametrize("event", [dialplan.CALL_ENDED_EVENT, dialplan.ROUND_EVENT, dialplan.ANSWERED_EVENT])
def test_each_user_event_the_service_reads_is_raised_by_the_dialplan(event: str) -> None:
    assert f"UserEvent({event}," in EXTENSIONS


def test_the_end_of_every_call_is_reported_whoever_routes_it() -> None:
    emergency = EXTENSIONS.split("[v112-emergency]")[1].split("\n[")[0]
    # the hangup handler is on the caller's channel before the service is asked (or skipped)
    assert emergency.index("hangup_handler_push)=v112-call-end,s,1") < emergency.index("n(ask)")
    assert f"DB({dialplan.ABANDONED_FAMILY}/" in EXTENSIONS
    assert f"DBdeltree({dialplan.ABANDONED_FAMILY}/" in EXTENSIONS
    modules = (TEMPLATES / "modules.conf.j2").read_text()
    for module in ("func_db.so", "app_db.so", "func_global.so", "app_userevent.so", "func_strings.so"):
        assert f"load => {module}" in modules
