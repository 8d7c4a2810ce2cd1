"""Who may do what: bearer tokens with a role, checked on every request.

What each role reaches (web.settings.Role), by the access a route requires:
- ``look``: status, metrics, the rules, the supervisor view; nothing personal.
  Roles read, supervisor, admin.
- ``rules``: change the rules. Role admin.
- ``callers``: caller numbers (the callback list) and acting on calls (marking
  an abandoned call called back). Roles dispatcher and supervisor.
- ``map``: the district polygons. Every role but aml.
- ``aml``: deliver AML messages. Role aml, or a signed delivery (signed_grant).
- ``describe``: the API's description (web/openapi.yaml). Every role: it is no secret
  (it ships in the wheel), but nothing but the health checks answers without a token.
Only ``/healthz`` and ``/readyz`` (web.health) need no token: they hold no data.
A dispatcher's page and screen belong to the seat the token is named after.

Tokens travel in the Authorization header. Browsers cannot set one on a page
link, so the pages (/dispatch/<seat>, /supervisor) take ``?token=``; a
dispatcher's WebSocket without the header authenticates with its first
message (web.notifier). Tokens never reach a log (the access log has the
path, not the query) or another site (every response says Referrer-Policy:
no-referrer). A missing or unknown token gets 401, a token without the access
403; both are logged without the token.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Literal

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from pydantic import SecretStr

from web.health import PUBLIC_PATHS
from web.limits import read_body
from web.ports import GRANT, PORTS, WebPorts
from web.settings import TokenGrant

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Access = Literal["look", "rules", "callers", "map", "aml", "describe"]
_ADMITS: dict[Access, frozenset[str]] = {
    "look": frozenset({"read", "supervisor", "admin"}),
    "rules": frozenset({"admin"}),
    "callers": frozenset({"dispatcher", "supervisor"}),
    "map": frozenset({"read", "supervisor", "admin", "dispatcher"}),
    "aml": frozenset({"aml"}),
    "describe": frozenset({"read", "supervisor", "admin", "dispatcher", "aml"}),
}
# browsers cannot set headers on a page link: the token comes as a query parameter there
_PAGE_PATHS = ("/dispatch/", "/supervisor")
SCREEN_PATH = "/ws/v1/dispatchers/"
SIGNATURE, TIMESTAMP, NONCE = "X-AML-Signature", "X-AML-Timestamp", "X-AML-Nonce"
_NONCE = re.compile(r"^[A-Za-z0-9._~-]{16,128}$")


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
    if request.path in PUBLIC_PATHS:
        return await handler(request)  # liveness and readiness: no data, no token
    ports = request.app[PORTS]
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if not token.strip() and request.path.startswith(_PAGE_PATHS):
        scheme, token = "bearer", request.query.get("token", "")
    grant = grant_of(token.strip(), ports.web.tokens) if scheme.lower() == "bearer" and token.strip() else None
    if grant is None and not header and request.path.startswith(SCREEN_PATH):
        return await handler(request)  # the screen's first message carries the token (web.notifier)
    if grant is None and request.path.startswith("/aml/") and SIGNATURE in request.headers:
        grant, refusal = await signed_grant(request, ports, time.time())
        if grant is None:
            reason, message = refusal
            ports.aml_signatures_refused.labels(reason).inc()
            log.warning("AML delivery from %s refused: %s", request.remote, message)
            return error(401, f"AML signature refused: {message}")
    if grant is None:
        log.warning("HTTP %s %s refused: no valid token (from %s)", request.method, request.path, request.remote)
        return error(401, "a valid bearer token is required")
    request[GRANT] = grant
    return await handler(request)


def aml_signature(secret: bytes, timestamp: str, nonce: str, body: bytes) -> str:
    """What a sender puts in X-AML-Signature: HMAC-SHA256 over "<timestamp>\\n<nonce>\\n" and the body."""
    signed = timestamp.encode() + b"\n" + nonce.encode() + b"\n" + body
    return "sha256=" + hmac.new(secret, signed, hashlib.sha256).hexdigest()


# why signed_grant refuses a delivery: the label of verbund112_aml_signatures_refused_total
SIGNATURE_REFUSALS = ("off", "incomplete", "bad-signature", "stale", "replay")


async def signed_grant(request: web.Request, ports: WebPorts, now: float) -> tuple[TokenGrant | None, tuple[str, str]]:
    """A delivery signed with aml.hmac_secret counts as the aml role, once, and only while fresh.

    X-AML-Timestamp (Unix seconds) must be within aml.signature_window_s of
    the service's clock, and X-AML-Nonce (16-128 characters) must not have
    been seen in that time (remembered in the store): a captured delivery
    cannot be played again. Returns the grant, or why not (a metric label
    and a message).
    """
    settings = ports.aml
    secret = settings.hmac_secret.get_secret_value()
    timestamp, nonce = request.headers.get(TIMESTAMP, "").strip(), request.headers.get(NONCE, "").strip()
    if not secret:
        return None, ("off", "signed delivery is not configured here")
    if not timestamp.isdigit() or not _NONCE.match(nonce):
        return None, ("incomplete", f"{TIMESTAMP} (Unix seconds) and {NONCE} (16-128 of A-Z a-z 0-9 . _ ~ -) needed")
    body = await read_body(request, settings.max_body_bytes)
    expected = aml_signature(secret.encode(), timestamp, nonce, body)
    if not hmac.compare_digest(expected.encode(), request.headers[SIGNATURE].strip().encode()):
        return None, ("bad-signature", "the signature does not match")
    window = settings.signature_window_s
    if abs(now - int(timestamp)) > window:
        return None, ("stale", f"{TIMESTAMP} is more than {window} s off the service's clock")
    if not await ports.aml_sink.claim_aml_nonce(nonce, 2 * window):  # StoreError: 503, the sender retries
        return None, ("replay", f"this {NONCE} was used before")
    return TokenGrant(role="aml", name="hmac"), ("", "")


def require(access: Access) -> Callable[[Handler], Handler]:
    roles = _ADMITS[access]

    def wrap(handler: Handler) -> Handler:
        async def checked(request: web.Request) -> web.StreamResponse:
            grant = request[GRANT]
            if grant.role not in roles:
                log.warning("HTTP %s %s refused: %s (%s) lacks %s access", request.method, request.path,
                            grant.name, grant.role, access)  # fmt: skip
                return error(403, f"this needs a token of role {' or '.join(sorted(roles))}")
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


def dispatcher_of(token: str, tokens: dict[SecretStr, TokenGrant]) -> str | None:
    """The seat a token belongs to, if it is a dispatcher's."""
    grant = grant_of(token, tokens)
    return grant.name if grant is not None and grant.role == "dispatcher" else None


async def no_referrer(_: web.Request, response: web.StreamResponse) -> None:
    """Every response: a page's address (with its token) is never sent on to another site."""
    response.headers["Referrer-Policy"] = "no-referrer"


class PathOnlyAccessLogger(AbstractAccessLogger):
    """One line per request with the path only: the query string may hold a token."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info("HTTP %s %s %s %d %.3f s", request.remote, request.method, request.path,
                         response.status, time)  # fmt: skip
