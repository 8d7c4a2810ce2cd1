"""Checks against the service's OpenAPI description (web/openapi.yaml): real HTTP answers with
openapi-core, WebSocket messages with the schemas of its components."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from jsonschema.exceptions import ValidationError
from openapi_core import OpenAPI
from openapi_core.testing import MockRequest, MockResponse
from openapi_schema_validator import OAS31Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

import web

DOCUMENT = Path(web.__file__).parent / "openapi.yaml"
_URI = "urn:verbund112:openapi"


def description() -> dict[str, Any]:
    return yaml.safe_load(DOCUMENT.read_text(encoding="utf-8"))


class Answers:
    """Sends real requests; each answer must match the description (status, media type, body)."""

    def __init__(self, client: aiohttp.ClientSession, base: str) -> None:
        self.client, self.base, self.spec = client, base, OpenAPI.from_dict(description())

    async def check(self, method: str, path: str, headers: dict[str, str], *, body: bytes | None = None,
                    content_type: str = "application/json") -> tuple[int, Any]:  # fmt: skip
        """The status and the body (JSON decoded where it is JSON); raises if the answer is not as described."""
        headers = dict(headers)
        if body is not None:
            headers["Content-Type"] = content_type
        async with self.client.request(method, self.base + path, headers=headers, data=body) as response:
            data, status, answer_type = await response.read(), response.status, response.content_type
        request = MockRequest(self.base, method.lower(), path.partition("?")[0], headers=headers, data=body,
                              content_type=content_type)  # fmt: skip
        self.spec.validate_response(request, MockResponse(data, status_code=status, content_type=answer_type))
        return status, json.loads(data) if answer_type == "application/json" else data


class Messages:
    """Validates JSON messages against the schemas of the description's components."""

    def __init__(self) -> None:
        spec = description()
        self._registry = Registry().with_resource(_URI, Resource.from_contents(spec, DRAFT202012))
        self._screen = spec["components"]["schemas"]["ScreenMessage"]["discriminator"]["mapping"]

    def problems(self, schema: str, message: Any) -> list[str]:
        validator = OAS31Validator({"$ref": f"{_URI}#/components/schemas/{schema}"}, registry=self._registry)
        return [_say(error) for error in validator.iter_errors(message)]

    def screen_problems(self, message: Any) -> list[str]:
        """A message to a dispatcher's screen, by the schema its type names (ScreenMessage's discriminator)."""
        kind = message.get("type") if isinstance(message, dict) else None
        if kind not in self._screen:
            return [f"type {kind!r} is not described (ScreenMessage)"]
        return self.problems(self._screen[kind].rpartition("/")[2], message)


def _say(error: ValidationError) -> str:
    return f"{'/'.join(map(str, error.absolute_path)) or '(message)'}: {error.message}"
