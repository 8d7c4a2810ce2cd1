"""aiohttp application of the service. Every route needs a bearer token.

Tokens and their roles come from settings.web.tokens (read or admin). A
missing or unknown token gets 401, a token without the role 403; both are
logged without the token itself.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import prometheus_client as prom
from aiohttp import web

if TYPE_CHECKING:
    from verbund112.service import Service

log = logging.getLogger(__name__)

SERVICE: web.AppKey[Service] = web.AppKey("service")
ROLE = web.RequestKey("role", str)
_ROLE_RANK = {"read": 1, "admin": 2}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def role_of(token: str, tokens: dict) -> str | None:  # type: ignore[type-arg]
    role = None
    for secret, secret_role in tokens.items():
        # compare every token in constant time, so timing says nothing
        if hmac.compare_digest(secret.get_secret_value().encode(), token.encode()):
            role = secret_role
    return role


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    role = role_of(token.strip(), request.app[SERVICE].settings.web.tokens) if scheme.lower() == "bearer" else None
    if role is None:
        log.warning("HTTP %s %s refused: no valid token (from %s)", request.method, request.path, request.remote)
        return _error(401, "a valid bearer token is required")
    request[ROLE] = role
    return await handler(request)


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error(exc.status, exc.reason)


def require(role: str) -> Callable[[Handler], Handler]:
    def wrap(handler: Handler) -> Handler:
        async def checked(request: web.Request) -> web.StreamResponse:
            if _ROLE_RANK[request[ROLE]] < _ROLE_RANK[role]:
                return _error(403, f"this needs the {role} role")
            return await handler(request)

        return checked

    return wrap


@require("read")
async def status(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    stats = service.fastagi.stats
    return web.json_response(
        {
            "site": service.settings.site,
            "ami": {"connected": service.ami.connected.is_set(), "connections": service.ami.connections},
            "fastagi": {
                "requests": stats.requests,
                "answered": stats.answered,
                "fallbacks": stats.fallbacks,
                "rejected": stats.rejected,
            },
            "redis": {"reachable": service.redis_ok},
        }
    )


@require("read")
async def metrics(request: web.Request) -> web.Response:
    body = prom.generate_latest(request.app[SERVICE].metrics.registry)
    return web.Response(body=body, headers={"Content-Type": prom.CONTENT_TYPE_LATEST})


def make_app(service: Service) -> web.Application:
    app = web.Application(middlewares=[json_errors, authenticate], client_max_size=1024 * 1024)
    app[SERVICE] = service
    app.router.add_get("/api/v1/status", status)
    app.router.add_get("/metrics", metrics)
    return app
