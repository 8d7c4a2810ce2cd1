"""web/openapi.yaml describes the HTTP API the service really serves: every route, the roles each admits,
and answers that match it. The service runs for real here (nothing behind its AMI and Redis ports)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import yaml
from openapi_spec_validator import validate

from tests.support.openapi import Answers, Messages, description
from tests.unit.test_fastagi import service_settings
from verbund112.service import Service, running
from web.app import SimulationRequest
from web.health import PUBLIC_PATHS

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
TIMEOUT = aiohttp.ClientTimeout(total=5)
ROLES = ("read", "admin", "supervisor", "dispatcher", "aml")
SEAT = "jena-d1"
TOKENS = {f"t-{role}-0123456789": {"role": role, "name": SEAT if role == "dispatcher" else role} for role in ROLES}
PATH_VALUES = {"dispatcher": SEAT, "call_id": "no-such-call"}


def operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method.upper(), path, operation) for path, item in spec["paths"].items()
            for method, operation in item.items() if method in METHODS]  # fmt: skip


def bearer(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer t-{role}-0123456789"}


@pytest.fixture
async def service() -> AsyncIterator[Service]:
    async with running(service_settings(web={"port": 0, "tokens": TOKENS})) as started:
        yield started


def test_the_description_is_valid_openapi_3_1() -> None:
    spec = description()
    validate(spec)  # raises with the first problem
    assert spec["openapi"].startswith("3.1")


def served_routes(app: aiohttp.web.Application) -> set[tuple[str, str]]:
    """(method, path) of every route; a HEAD that aiohttp added beside a GET (same handler) counts as that GET."""
    routes = list(app.router.routes())
    get_handlers = {(r.resource.canonical, r.handler) for r in routes if r.method == "GET" and r.resource}
    return {
        (route.method, route.resource.canonical)
        for route in routes
        if route.resource is not None
        and not (route.method == "HEAD" and (route.resource.canonical, route.handler) in get_handlers)
    }


async def test_the_description_names_every_route_the_service_serves_and_no_other(service: Service) -> None:
    assert service.web_app is not None
    served = served_routes(service.web_app)
    documented = {(method, path) for method, path, _ in operations(description())}
    assert sorted(served - documented) == [], "served but not in web/openapi.yaml"
    assert sorted(documented - served) == [], "in web/openapi.yaml but not served"


def documented_roles(operation: dict[str, Any]) -> set[str]:
    return {role for requirement in operation["security"] for role in requirement.get("bearer", ())}


async def test_each_operation_admits_exactly_the_token_roles_it_names(service: Service) -> None:
    """A token of every role against every operation: 403 exactly for the roles the description leaves out."""
    spec = description()
    public = set()
    async with aiohttp.ClientSession(timeout=TIMEOUT) as client:
        for method, path, operation in operations(spec):
            if operation["security"] == []:
                public.add(path)
                continue
            admitted = documented_roles(operation)
            url = f"http://127.0.0.1:{service.web_port}" + path.format(**PATH_VALUES)
            # empty bodies: an admitted role gets a refusal of the body (or the store's 503), never 401/403
            params = {"dry_run": "1"} if (method, path) == ("PUT", "/api/v1/rules") else {}
            for role in ROLES:
                async with client.request(method, url, headers=bearer(role), params=params) as response:
                    status = response.status
                assert status != 401, f"{method} {path}: the {role} token was not taken"
                assert (status == 403) == (role not in admitted), (
                    f"{method} {path} with a {role} token: {status}, documented roles {sorted(admitted)}"
                )
    assert public == PUBLIC_PATHS  # described without a token: the health checks, and only they


async def test_real_answers_match_the_described_schemas_errors_included(service: Service) -> None:
    form = "application/x-www-form-urlencoded"
    async with aiohttp.ClientSession(timeout=TIMEOUT) as client:
        answers = Answers(client, f"http://127.0.0.1:{service.web_port}")
        read, admin = bearer("read"), bearer("admin")
        assert (await answers.check("GET", "/healthz", {}))[0] == 200
        assert (await answers.check("GET", "/readyz", {}))[0] == 503  # AMI down
        assert (await answers.check("GET", "/api/v1/status", read))[0] == 200
        assert (await answers.check("GET", "/api/v1/status", {}))[0] == 401
        assert (await answers.check("GET", "/api/v1/status", bearer("aml")))[0] == 403
        assert (await answers.check("GET", "/api/v1/rules", read))[0] == 200
        assert (await answers.check("GET", "/metrics", read))[0] == 200
        assert (await answers.check("GET", "/supervisor?token=t-read-0123456789", {}))[0] == 200
        assert (await answers.check("GET", f"/dispatch/{SEAT}?token=t-dispatcher-0123456789", {}))[0] == 200
        assert (await answers.check("GET", f"/dispatch/{SEAT}?token=t-read-0123456789", {}))[0] == 403
        assert (await answers.check("GET", "/api/v1/supervisor", read))[0] == 200  # the partner unknown
        assert (await answers.check("GET", "/api/v1/districts", bearer("dispatcher")))[0] == 200
        assert (await answers.check("GET", "/api/v1/rules/audit", read))[0] == 503  # Redis down
        assert (await answers.check("GET", "/api/v1/abandoned", bearer("supervisor")))[0] == 503
        simulated = b'{"site": "jena", "number": "03641 123456"}'
        assert (await answers.check("POST", "/api/v1/rules/simulate", read, body=simulated))[0] == 200
        too_far_north = b'{"site": "jena", "lat": 91}'
        assert (await answers.check("POST", "/api/v1/rules/simulate", read, body=too_far_north))[0] == 400
        assert (await answers.check("POST", "/api/v1/rules/reload", admin))[0] == 200
        bad_yaml = b"sites: ["
        put = await answers.check("PUT", "/api/v1/rules?dry_run=1", admin, body=bad_yaml, content_type="text/plain")
        assert put[0] == 422
        no_number = b"location_latitude=50.9&location_longitude=11.6"
        aml = await answers.check("POST", "/aml/v1/https", bearer("aml"), body=no_number, content_type=form)
        assert aml[0] == 202  # refused, as the AML HTTPS format asks (web/aml.py)


async def test_the_screen_messages_match_the_described_schemas(service: Service) -> None:
    """What a screen gets without a call (the lab test has a card): hello, its state, an error."""
    messages = Messages()
    url = f"http://127.0.0.1:{service.web_port}/ws/v1/dispatchers/{SEAT}"
    async with aiohttp.ClientSession(timeout=TIMEOUT) as client, client.ws_connect(url) as screen, asyncio.timeout(10):
        await screen.send_json({"type": "auth", "token": "t-dispatcher-0123456789"})
        hello = await screen.receive_json()
        await screen.send_json({"type": "state"})
        state = await screen.receive_json()
        await screen.send_str("nonsense")
        refused = await screen.receive_json()
    assert [hello["type"], state["type"], refused["type"]] == ["hello", "state", "error"]
    for message in (hello, state, refused):
        assert messages.screen_problems(message) == []
    assert messages.screen_problems({"type": "hello", "site": "jena"}) != []  # the check itself checks


async def test_the_service_serves_its_description_to_every_token_and_not_without_one(service: Service) -> None:
    url = f"http://127.0.0.1:{service.web_port}/api/v1/openapi.yaml"
    async with aiohttp.ClientSession(timeout=TIMEOUT) as client:
        for role in ROLES:
            async with client.get(url, headers=bearer(role)) as response:
                assert response.status == 200
                assert response.content_type == "application/yaml"
                assert yaml.safe_load(await response.read()) == description()
        async with client.get(url) as response:
            assert response.status == 401


def test_the_simulation_request_is_described_field_for_field() -> None:
    """The one request body with a model of its own (web.app.SimulationRequest): same fields, same required ones."""
    described = description()["components"]["schemas"]["SimulationRequest"]
    model = SimulationRequest.model_json_schema()
    assert set(described["properties"]) == set(model["properties"])
    assert set(described.get("required", [])) == set(model.get("required", []))
    assert described["additionalProperties"] is model["additionalProperties"] is False  # unknown fields: 400
