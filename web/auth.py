"""Who may do what: bearer tokens with a role, checked on every request.

Tokens come from settings.web.tokens, each with a role and a name (the audit
trail names who changed the rules). A missing or unknown token gets 401, a
token without the role 403; both are logged without the token.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from pydantic import SecretStr

from web.ports import GRANT, PORTS
from web.settings import TokenGrant

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# which token roles a route's role admits
_ADMITS = {"read": {"read", "admin"}, "admin": {"admin"}, "aml": {"aml"}, "dispatcher": {"dispatcher", "read", "admin"}}
# browsers cannot set headers on a WebSocket or a page link: the token comes as a query parameter there
_QUERY_TOKEN_PATHS = ("/ws/", "/dispatch/", "/supervisor")


def error(status: int, message: str, **extra: object) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


def grant_of(token: str, tokens: dict[SecretStr, TokenGrant]) -> TokenGrant | None:
    grant = None
    for secret, secret_grant in tokens.items():
        # compare against every token in constant time, so timing says nothing
        if hmac.compare_digest(secret.get_secret_value().encode(), token.encode()):
            grant = secret_grant
    return grant


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    ports = request.app[PORTS]
    if not token.strip() and request.path.startswith(_QUERY_TOKEN_PATHS):
        scheme, token = "bearer", request.query.get("token", "")
    grant = grant_of(token.strip(), ports.web.tokens) if scheme.lower() == "bearer" and token.strip() else None
    if grant is None and request.path.startswith("/aml/") and "X-AML-Signature" in request.headers:
        grant = await signed_grant(request, ports.aml.hmac_secret.get_secret_value(), ports.aml.max_body_bytes)
    if grant is None:
        log.warning("HTTP %s %s refused: no valid token (from %s)", request.method, request.path, request.remote)
        return error(401, "a valid bearer token is required")
    request[GRANT] = grant
    return await handler(request)


async def signed_grant(request: web.Request, secret: str, limit: int) -> TokenGrant | None:
    """An AML delivery signed with the shared HMAC secret counts as the aml role."""
    if not secret or (request.content_length or 0) > limit:
        return None
    body = await request.read()
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    if hmac.compare_digest(expected.encode(), request.headers["X-AML-Signature"].strip().encode()):
        return TokenGrant(role="aml", name="hmac")
    return None


def require(role: str) -> Callable[[Handler], Handler]:
    def wrap(handler: Handler) -> Handler:
        async def checked(request: web.Request) -> web.StreamResponse:
            grant = request[GRANT]
            if grant.role not in _ADMITS[role]:
                log.warning("HTTP %s %s refused: %s lacks the %s role", request.method, request.path, grant.name, role)
                return error(403, f"this needs the {role} role")
            return await handler(request)

        return checked

    return wrap


def own_dispatcher(request: web.Request) -> str | None:
    """The dispatcher a page or socket is for, if the token is that dispatcher's own."""
    dispatcher = request.match_info["dispatcher"]
    grant = request[GRANT]
    if grant.role != "dispatcher" or grant.name != dispatcher:
        log.warning("%s of %s refused to %s (%s)", request.path.split("/")[1], dispatcher, grant.name, grant.role)
        return None
    return dispatcher
