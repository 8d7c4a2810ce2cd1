"""Routing by location through the real lab: both sites, both services, Redis, desks."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest

from lab import lab
from routing.decision import Route
from telephony.events import DispatcherAnswered
from tests.conftest import next_event, place_call
from tests.support.hostile_input import ALIAS_BOMB
from verbund112.features.hub import CallRouted
from verbund112.service import Service

pytestmark = pytest.mark.lab

GREIZ = (50.654700, 12.199700, 30)
NAILA_HOF = (50.329700, 11.706900, 50)  # Landkreis Hof: ILS Hochfranken, outside the Verbund


async def both_services(start_service) -> tuple[Service, Service]:
    jena = await start_service("jena")
    gera = await start_service("gera")
    async with asyncio.timeout(10):
        await jena.partner.reporting.wait()
        await gera.partner.reporting.wait()
    return jena, gera


async def answered_where(jena: Service, gera: Service, call) -> tuple[CallRouted, DispatcherAnswered]:
    with jena.hub.subscribe() as jena_events, gera.hub.subscribe() as gera_events:
        assert await call == 0
        routed = await next_event(jena_events, CallRouted)
        answered = await next_event(
            _merged(jena_events, gera_events), DispatcherAnswered, lambda e: e.call_id == routed.call_id
        )
    return routed, answered


def _merged(*queues: asyncio.Queue) -> asyncio.Queue:
    merged: asyncio.Queue = asyncio.Queue()
    for queue in queues:
        while not queue.empty():
            merged.put_nowait(queue.get_nowait())
    return merged


async def test_pidf_lo_position_in_greiz_delivered_to_jena_is_answered_in_gera(
    verbund: lab.Verbund, start_service, start_desks
) -> None:
    jena, gera = await both_services(start_service)
    await start_desks("jena", ["jena-d1"])  # Jena could answer: only the routing sends it to Gera
    await start_desks("gera", ["gera-d1"])
    call = place_call(verbund, "jena", "+4915112345678", talk_ms=300, position=GREIZ)
    routed, answered = await answered_where(jena, gera, call)
    assert routed.decision.route is Route.PARTNER
    assert routed.decision.location is not None and routed.decision.location.district == "Greiz"
    assert answered.site == "gera" and answered.dispatcher == "gera-d1"
    assert answered.from_site == "jena"


async def test_fixed_line_from_gera_delivered_to_jena_goes_to_gera(
    verbund: lab.Verbund, start_service, start_desks
) -> None:
    jena, gera = await both_services(start_service)
    await start_desks("jena", ["jena-d1"])
    await start_desks("gera", ["gera-d2"])
    routed, answered = await answered_where(jena, gera, place_call(verbund, "jena", "0365123456", talk_ms=300))
    assert routed.decision.route is Route.PARTNER
    assert "Ortsnetz 0365" in routed.decision.reason
    assert answered.site == "gera" and answered.dispatcher == "gera-d2"
    assert answered.caller_number == "0365123456"


async def test_fixed_line_from_jena_stays_in_jena(verbund: lab.Verbund, start_service, start_desks) -> None:
    jena, gera = await both_services(start_service)
    await start_desks("jena", ["jena-d1"])
    await start_desks("gera", ["gera-d1"])
    routed, answered = await answered_where(jena, gera, place_call(verbund, "jena", "036411234567", talk_ms=300))
    assert routed.decision.route is Route.LOCAL
    assert answered.site == "jena" and answered.dispatcher == "jena-d1"


async def test_a_malformed_pidf_lo_still_reaches_a_dispatcher(verbund: lab.Verbund, start_service, start_desks) -> None:
    jena = await start_service("jena")
    await start_desks("jena", ["jena-d1"])
    with jena.hub.subscribe() as events:
        assert await place_call(verbund, "jena", "+4915112345678", talk_ms=300, position=(999.0, 11.5, 10)) == 0
        routed = await next_event(events, CallRouted)
        answered = await next_event(events, DispatcherAnswered, lambda e: e.call_id == routed.call_id)
    assert routed.position is None
    assert routed.decision.route is Route.LOCAL
    assert answered.dispatcher == "jena-d1"


async def test_a_call_for_a_neighbour_with_a_target_is_forwarded_with_the_caller_number(
    verbund: lab.Verbund, start_service, start_desks, tmp_path: Path
) -> None:
    gera = await start_service("gera")
    await start_desks("gera", ["gera-d1"])
    messages = tmp_path / "neighbour.log"
    neighbour = lab.neighbour_uas(verbund.site("gera"), verbund.ports["gera"].neighbour, messages)
    try:
        with gera.hub.subscribe() as events:
            assert await place_call(verbund, "gera", "+4915112345678", talk_ms=500, position=NAILA_HOF) == 0
            routed = await next_event(events, CallRouted)
        _, errors = await asyncio.to_thread(neighbour.communicate, None, 30)
        assert neighbour.returncode == 0, errors
    finally:
        if neighbour.poll() is None:
            neighbour.kill()
            neighbour.communicate()
    assert routed.decision.route is Route.EXTERNAL
    invite = messages.read_text().split("INVITE sip:", 1)[1].split("\n\n", 1)[0]
    assert invite.startswith(f"{lab.LAB_NEIGHBOUR_NUMBER}@")
    assert "P-Asserted-Identity: <sip:+4915112345678@" in invite


async def test_broken_rules_are_refused_and_calls_keep_routing_with_the_old_ones(
    verbund: lab.Verbund, start_service, start_desks
) -> None:
    jena, gera = await both_services(start_service)
    await start_desks("jena", ["jena-d1"])
    await start_desks("gera", ["gera-d1"])
    good = verbund.rules_file.read_text()
    digest = jena.rules.rules.digest
    try:
        verbund.rules_file.write_text(good.replace('"16052": gera', '"16052": atlantis'))
        with pytest.raises(Exception, match="unknown centre 'atlantis'"):
            await jena.rules.change("test")
        assert jena.rules.rules.digest == digest
    finally:
        verbund.rules_file.write_text(good)
    _, answered = await answered_where(jena, gera, place_call(verbund, "jena", "0365123456", talk_ms=300))
    assert answered.site == "gera"
    assert jena.rules.last_error is not None  # what was wrong stays visible until a good reload


async def test_admin_api_upload_dry_run_audit_and_roles(verbund: lab.Verbund, start_service) -> None:
    jena = await start_service("jena")
    base = f"http://127.0.0.1:{verbund.ports['jena'].web}/api/v1"
    admin = {"Authorization": f"Bearer {verbund.web_token}"}
    reader = {"Authorization": f"Bearer {verbund.read_token}"}
    text = verbund.rules_file.read_text()
    moved = text.replace('"16076": gera', '"16076": jena')
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as client:
        async with client.put(f"{base}/rules", data=moved) as response:
            assert response.status == 401
        async with client.put(f"{base}/rules", data=moved, headers=reader) as response:
            assert response.status == 403
        async with client.put(f"{base}/rules?dry_run=1", data=moved, headers=admin) as response:
            assert response.status == 200
            body = await response.json()
        assert body["applied"] is False
        assert body["changes"] == ["district Greiz (16076): ZLS gera → ZLS jena"]
        assert verbund.rules_file.read_text() == text  # a dry run changes nothing
        async with client.put(f"{base}/rules", data="sites: [", headers=admin) as response:
            assert response.status == 422
            assert "not valid YAML" in json.dumps(await response.json())
        async with client.post(f"{base}/rules/simulate", headers=reader,
                               json={"number": "0365123456", "site": "jena"}) as response:  # fmt: skip
            assert response.status == 200
            simulation = await response.json()
        async with client.get(f"{base}/rules/audit", headers=reader) as response:
            entries = (await response.json())["entries"]
    assert simulation["decision"]["route"] == "partner"
    assert entries[0]["who"] == "lab-admin" and entries[0]["result"] == "refused"
    assert entries[1]["action"] == "dry-run" and entries[1]["result"] == "validated"
    assert jena.rules.rules is not None


@pytest.mark.parametrize(
    ("entry", "shape", "district", "answering_site"),
    [
        (
            "jena",
            lab.pidf_polygon([(50.650, 12.190), (50.660, 12.190), (50.660, 12.210), (50.650, 12.210)]),
            "Greiz",
            "gera",
        ),
        ("gera", lab.pidf_ellipse(50.9279, 11.5891, 60, 20, 30), "Jena", "jena"),
    ],
)
async def test_polygon_and_ellipse_positions_route_through_asterisk(
    verbund: lab.Verbund, start_service, start_desks, entry: str, shape: str, district: str, answering_site: str
) -> None:
    jena, gera = await both_services(start_service)
    await start_desks("jena", ["jena-d1"])
    await start_desks("gera", ["gera-d1"])
    entry_service = jena if entry == "jena" else gera
    with jena.hub.subscribe() as jena_events, gera.hub.subscribe() as gera_events:
        assert await place_call(verbund, entry, "+4915112345678", talk_ms=300, shape_xml=shape) == 0
        routed = await next_event(jena_events if entry_service is jena else gera_events, CallRouted)
        answered = await next_event(
            _merged(jena_events, gera_events), DispatcherAnswered, lambda e: e.call_id == routed.call_id
        )
    assert routed.decision.location is not None
    assert routed.decision.location.district == district
    assert answered.site == answering_site


async def test_an_alias_bomb_and_a_device_as_data_file_get_422_while_calls_are_routed(
    verbund: lab.Verbund, start_service, start_desks
) -> None:
    jena = await start_service("jena")
    await start_desks("jena", ["jena-d1"])
    endless = verbund.rules_file.read_text().replace("area_codes: area_codes.yaml", "area_codes: /dev/zero")
    url = f"http://127.0.0.1:{verbund.ports['jena'].web}/api/v1/rules"
    admin = {"Authorization": f"Bearer {verbund.web_token}"}
    answers: list[tuple[int, str]] = []
    routed_now = asyncio.Event()

    async def keep_uploading() -> None:
        """Both uploads, again and again, until the call has been routed: each must be refused at once."""
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as client:
            while not routed_now.is_set():
                for text in (ALIAS_BOMB, endless):
                    async with client.put(url, data=text, headers=admin) as response:
                        answers.append((response.status, json.dumps(await response.json())))

    digest = jena.rules.rules.digest
    with jena.hub.subscribe() as events:
        uploads = asyncio.create_task(keep_uploading())
        call = asyncio.create_task(place_call(verbund, "jena", "036411234567", talk_ms=300))
        routed = await next_event(events, CallRouted)
        routed_now.set()
        await uploads
        answered = await next_event(events, DispatcherAnswered, lambda e: e.call_id == routed.call_id)
        assert await call == 0
    assert routed.decision.route is Route.LOCAL  # the service's answer, not the dialplan's fallback
    assert jena.fastagi.stats.fallbacks == 0
    assert answered.dispatcher == "jena-d1"
    assert len(answers) >= 2
    bombs, devices = answers[0::2], answers[1::2]
    assert all(status == 422 and "anchors and aliases" in body for status, body in bombs), bombs[:1]
    assert all(status == 422 and "/dev/zero: outside the rules folder" in body for status, body in devices), devices[:1]
    assert jena.rules.rules.digest == digest
