"""web/openapi.yaml describes the HTTP API the service really serves: every route, the roles each admits,
and answers that match it. The service runs for real here (nothing behind its AMI and Redis ports)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from openapi_core import OpenAPI
from openapi_core.testing import MockRequest, MockResponse
from openapi_spec_validator import validate

import web
from tests.unit.test_fastagi import service_settings
from verbund112.service import Service, running
from web.health import PUBLIC_PATHS

DOCUMENT = Path(web.__file__).parent / "openapi.yaml"
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
TIMEOUT = aiohttp.ClientTimeout(total=5)
ROLES = ("read", "admin", "supervisor", "dispatcher", "aml")
SEAT = "jena-d1"
TOKENS = {f"t-{role}-0123456789": {"role": role, "name": SEAT if role == "dispatcher" else role} for role in ROLES}
PATH_VALUES = {"dispatcher": SEAT, "call_id": "no-such-call"}


def description() -> dict[str, Any]:
    return yaml.safe_load(DOCUMENT.read_text(encoding="utf-8"))


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


class Answers:
    """Real requests to the service, each answer validated against the description (openapi-core)."""

    def __init__(self, client: aiohttp.ClientSession, base: str) -> None:
        self.client, self.base, self.spec = client, base, OpenAPI.from_dict(description())

    async def check(self, method: str, path: str, *, role: str | None = "read", body: bytes | None = None,
                    content_type: str = "application/json") -> int:  # fmt: skip
        headers = bearer(role) if role else {}
        if body is not None:
            headers["Content-Type"] = content_type
        async with self.client.request(method, self.base + path, headers=headers, data=body) as response:
            data, status, answer_type = await response.read(), response.status, response.content_type
        request = MockRequest(self.base, method.lower(), path.partition("?")[0], headers=headers, data=body,
                              content_type=content_type)  # fmt: skip
        self.spec.validate_response(request, MockResponse(data, status_code=status, content_type=answer_type))
        return status


async def test_real_answers_match_the_described_schemas_errors_included(service: Service) -> None:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as client:
        answers = Answers(client, f"http://127.0.0.1:{service.web_port}")
        assert await answers.check("GET", "/healthz", role=None) == 200
        assert await answers.check("GET", "/readyz", role=None) == 503  # AMI down
        assert await answers.check("GET", "/api/v1/status") == 200
        assert await answers.check("GET", "/api/v1/status", role=None) == 401
        assert await answers.check("GET", "/api/v1/status", role="aml") == 403
        assert await answers.check("GET", "/api/v1/rules") == 200
        assert await answers.check("GET", "/api/v1/supervisor") == 200  # the partner unknown
        assert await answers.check("GET", "/api/v1/districts", role="dispatcher") == 200
        assert await answers.check("GET", "/api/v1/rules/audit") == 503  # Redis down
        assert await answers.check("GET", "/api/v1/abandoned", role="supervisor") == 503
        simulated = b'{"site": "jena", "number": "03641 123456"}'
        assert await answers.check("POST", "/api/v1/rules/simulate", body=simulated) == 200
        assert await answers.check("POST", "/api/v1/rules/simulate", body=b'{"site": "jena", "lat": 91}') == 400
        assert await answers.check("PUT", "/api/v1/rules?dry_run=1", role="admin", body=b"sites: [",
                                   content_type="application/yaml") == 422  # fmt: skip
        assert await answers.check("POST", "/aml/v1/https", role="aml", body=b"device_number=x",
                                   content_type="application/x-www-form-urlencoded") == 400  # fmt: skip


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
