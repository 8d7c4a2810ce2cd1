"""aiohttp application of the service. Every route needs a bearer token.

Tokens come from settings.web.tokens, each with a role (read or admin) and a
name (the audit trail names who changed the rules). A missing or unknown token
gets 401, a token without the role 403; both are logged without the token.

Routes:
- GET  /api/v1/status            read   the site's health
- GET  /metrics                  read   Prometheus metrics
- GET  /api/v1/rules             read   the rules in force
- PUT  /api/v1/rules[?dry_run=1] admin  upload new rules (YAML body): validated, then swapped in
- POST /api/v1/rules/reload      admin  re-read the rules file from disk
- POST /api/v1/rules/simulate    read   where would this call go (JSON body)
- GET  /api/v1/rules/audit       read   who changed the rules, when, what
- GET  /api/v1/supervisor        read   both centres live: callers waiting, desks, overflow moves
- GET  /supervisor?token=        read   the supervisor page (polls the JSON above)
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import prometheus_client as prom
import shapely.geometry
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from routing.decision import AmlFix
from routing.location import LocationError, Position
from routing.rules import RulesError
from routing.simulation import as_dict, explain, simulate
from verbund112 import stores
from verbund112.settings import TokenGrant
from verbund112.supervision import supervisor_json

if TYPE_CHECKING:
    from verbund112.service import Service

log = logging.getLogger(__name__)

SERVICE: web.AppKey[Service] = web.AppKey("service")
GRANT = web.RequestKey("grant", TokenGrant)
# which token roles a route's role admits
_ADMITS = {"read": {"read", "admin"}, "admin": {"admin"}, "aml": {"aml"}, "dispatcher": {"dispatcher", "read", "admin"}}
MAX_RULES_BYTES = 1024 * 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, message: str, **extra: object) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


def grant_of(token: str, tokens: dict) -> TokenGrant | None:  # type: ignore[type-arg]
    grant = None
    for secret, secret_grant in tokens.items():
        # compare against every token in constant time, so timing says nothing
        if hmac.compare_digest(secret.get_secret_value().encode(), token.encode()):
            grant = secret_grant
    return grant


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    settings = request.app[SERVICE].settings
    if not token.strip() and request.path.startswith(("/ws/", "/dispatch/", "/supervisor")):
        # browsers cannot set headers on a WebSocket: the token comes as a query parameter
        scheme, token = "bearer", request.query.get("token", "")
    grant = grant_of(token.strip(), settings.web.tokens) if scheme.lower() == "bearer" and token.strip() else None
    if grant is None and request.path.startswith("/aml/") and "X-AML-Signature" in request.headers:
        grant = await signed_grant(request, settings.aml.hmac_secret.get_secret_value(), settings.aml.max_body_bytes)
    if grant is None:
        log.warning("HTTP %s %s refused: no valid token (from %s)", request.method, request.path, request.remote)
        return _error(401, "a valid bearer token is required")
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
            grant = request[GRANT]
            if grant.role not in _ADMITS[role]:
                log.warning("HTTP %s %s refused: %s lacks the %s role", request.method, request.path, grant.name, role)
                return _error(403, f"this needs the {role} role")
            return await handler(request)

        return checked

    return wrap


@require("read")
async def status(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    stats = service.fastagi.stats
    rules = service.rules.rules
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
            "partner": {"site": service.settings.partner, "reporting": service.partner_alive},
            "rules": {"digest": rules.digest if rules else None, "last_error": service.rules.last_error},
            "aml_pull": {
                "on": service.aml_polls.running,
                "problem": service.aml_pull_problem,
                "calls_polled": len(service.aml_polls.polls),
            },
        }
    )


@require("read")
async def metrics(request: web.Request) -> web.Response:
    body = prom.generate_latest(request.app[SERVICE].metrics.registry)
    return web.Response(body=body, headers={"Content-Type": prom.CONTENT_TYPE_LATEST})


@require("read")
async def get_rules(request: web.Request) -> web.Response:
    holder = request.app[SERVICE].rules
    rules = holder.rules
    if rules is None:
        return _error(503, "no valid rules loaded", problems=holder.last_error)
    return web.json_response(
        {
            "source": rules.source,
            "digest": rules.digest,
            "rules": rules.spec.model_dump(mode="json"),
            "area_codes": len(rules.area_codes),
            "cells": len(rules.cells),
            "districts": [{"ags": d.ags, "name": d.name} for d in rules.index.districts],
        }
    )


@require("admin")
async def put_rules(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    dry_run = request.query.get("dry_run", "0").lower() in ("1", "true", "yes")
    if request.content_length is not None and request.content_length > MAX_RULES_BYTES:
        return _error(413, "rules larger than 1 MB")
    try:
        text = (await request.read()).decode("utf-8")
    except UnicodeDecodeError:
        return _error(400, "the rules must be UTF-8 YAML")
    try:
        change = await service.reload_rules(request[GRANT].name, text=text, dry_run=dry_run)
    except RulesError as exc:
        return _error(422, "rules refused; the rules in force are unchanged", problems=exc.problems)
    return web.json_response(
        {"applied": change.applied, "old": change.old_digest, "new": change.new_digest, "changes": change.changes}
    )


@require("admin")
async def reload_rules(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    try:
        change = await service.reload_rules(request[GRANT].name)
    except RulesError as exc:
        return _error(422, "rules refused; the rules in force are unchanged", problems=exc.problems)
    return web.json_response({"applied": True, "old": change.old_digest, "new": change.new_digest,
                              "changes": change.changes})  # fmt: skip


class SimulationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    number: str = Field(default="", max_length=40)
    site: str = Field(max_length=16)
    lat: float | None = Field(default=None, ge=-90, le=90)
    lon: float | None = Field(default=None, ge=-180, le=180)
    radius_m: float = Field(default=0.0, ge=0, le=1_000_000)
    pidf: str | None = Field(default=None, max_length=65536, description="a PIDF-LO document")
    cell: str | None = Field(default=None, max_length=40)
    aml_lat: float | None = Field(default=None, ge=-90, le=90)
    aml_lon: float | None = Field(default=None, ge=-180, le=180)
    aml_radius_m: float = Field(default=20.0, ge=0, le=1_000_000)
    aml_age_s: float = Field(default=30.0, ge=0)
    partner_reporting: bool = True


@require("read")
async def simulate_call(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    rules = service.rules.rules
    if rules is None:
        return _error(503, "no valid rules loaded")
    try:
        ask = SimulationRequest.model_validate_json(await request.read())
    except ValidationError as exc:
        return _error(400, "bad simulation request", problems=[f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                                                               for e in exc.errors()])  # fmt: skip
    if ask.site not in rules.spec.sites:
        return _error(400, f"unknown site {ask.site!r}")
    position, problem = _position(ask)
    now = time.time()
    aml = None
    if ask.aml_lat is not None and ask.aml_lon is not None:
        aml = AmlFix(Position(ask.aml_lat, ask.aml_lon, ask.aml_radius_m, "Circle", "AML"), now - ask.aml_age_s)
    alive = frozenset(rules.spec.sites) if ask.partner_reporting else frozenset({ask.site})
    decision = simulate(rules, number=ask.number, site=ask.site, position=position, pidf_problem=problem,
                        cell_id=ask.cell, aml=aml, alive_sites=alive, now=now)  # fmt: skip
    return web.json_response({"decision": as_dict(decision), "explanation": explain(decision)})


def _position(ask: SimulationRequest) -> tuple[Position | None, str]:
    if ask.pidf is not None:
        from routing.pidf import parse_pidf

        try:
            return parse_pidf(ask.pidf), ""
        except LocationError as exc:
            return None, str(exc)
    if ask.lat is not None and ask.lon is not None:
        return Position(ask.lat, ask.lon, ask.radius_m, "Circle" if ask.radius_m else "Point", "simulated"), ""
    return None, ""


@require("read")
async def audit(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    try:
        entries = await stores.read_audit(service.redis, service.settings.redis.timeout)
    except stores.StoreError as exc:
        return _error(503, f"audit trail not readable: {exc}")
    return web.json_response({"entries": entries})


STATIC = Path(__file__).resolve().parent / "static"
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'self'; script-src 'unsafe-inline' 'self'; "
    "style-src 'unsafe-inline' 'self'; connect-src 'self'",
}


async def dispatch_page(request: web.Request) -> web.StreamResponse:
    """The dispatcher's page (token in the query: the page passes it on to the API and WebSocket)."""
    dispatcher = request.match_info["dispatcher"]
    grant = request[GRANT]
    if grant.role != "dispatcher" or grant.name != dispatcher:
        return _error(403, "the page only for the dispatcher the token belongs to")
    return web.FileResponse(STATIC / "dispatch.html", headers=PAGE_HEADERS)


@require("read")
async def supervisor_page(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC / "supervisor.html", headers=PAGE_HEADERS)


@require("read")
async def supervisor_view(request: web.Request) -> web.Response:
    """Both centres as this site sees them; the partner from its Redis report (or "unknown")."""
    service = request.app[SERVICE]
    now = time.time()
    mover = service.overflow
    moves: list[dict[str, object]] = []
    moves_problem = ""
    try:
        moves = await stores.recent_moves(service.redis, now - stores.MOVES_KEEP_S, service.settings.redis.timeout)
    except stores.StoreError as exc:
        moves_problem = f"Redis: {exc}"
    return web.json_response(
        supervisor_json(
            own=mover.snapshot(now),
            partner=mover.partner,
            partner_site=service.settings.partner,
            partner_problem=mover.partner_problem,
            moves=moves,
            moves_problem=moves_problem,
            why_no_move=mover.last_plan.why_not,
            now=now,
        )
    )


async def districts(request: web.Request) -> web.Response:
    """The district polygons of the rules in force, for the map (no external tile server)."""
    rules = request.app[SERVICE].rules.rules
    if rules is None:
        return _error(503, "no valid rules loaded")
    features = [
        {"type": "Feature", "properties": {"AGS": d.ags, "name": d.name, "verbund": rules.centre_of(d.ags) in
                                           rules.spec.sites},
         "geometry": shapely.geometry.mapping(geometry)}
        for d, geometry in zip(rules.index.districts, rules.index.geometries, strict=True)
    ]  # fmt: skip
    attribution = "© GeoBasis-DE / BKG 2021 (Daten verändert), https://www.bkg.bund.de"
    return web.json_response({"type": "FeatureCollection", "features": features, "attribution": attribution})


async def dispatcher_socket(request: web.Request) -> web.StreamResponse:
    """The screen pops of one dispatcher: only with a dispatcher token named after them."""
    dispatcher = request.match_info["dispatcher"]
    grant = request[GRANT]
    if grant.role != "dispatcher" or grant.name != dispatcher:
        log.warning("screen pops of %s refused to %s (%s)", dispatcher, grant.name, grant.role)
        return _error(403, "screen pops only for the dispatcher the token belongs to")
    return await request.app[SERVICE].calls.serve_socket(request, dispatcher)


async def abandoned(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    try:
        return web.json_response(await service.calls.abandoned_message())
    except stores.StoreError as exc:
        return _error(503, f"abandoned-call list not readable: {exc}")


async def callback_done(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    call_id = request.match_info["call_id"][:80]
    try:
        removed = await stores.callback_done(service.redis, call_id, service.settings.redis.timeout)
    except stores.StoreError as exc:
        return _error(503, f"not recorded, retry: {exc}")
    if not removed:
        return _error(404, "no such abandoned call (already called back?)")
    log.info("callback of abandoned call %s done by %s", call_id, request[GRANT].name)
    return web.json_response({"done": call_id, "by": request[GRANT].name})


def make_app(service: Service) -> web.Application:
    app = web.Application(middlewares=[json_errors, authenticate], client_max_size=MAX_RULES_BYTES + 1024)
    app[SERVICE] = service
    app.router.add_get("/api/v1/status", status)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/v1/rules", get_rules)
    app.router.add_put("/api/v1/rules", put_rules)
    app.router.add_post("/api/v1/rules/reload", reload_rules)
    app.router.add_post("/api/v1/rules/simulate", simulate_call)
    app.router.add_get("/api/v1/rules/audit", audit)
    app.router.add_get("/api/v1/supervisor", supervisor_view)
    app.router.add_get("/supervisor", supervisor_page)
    from web import aml

    app.router.add_get("/ws/v1/dispatchers/{dispatcher}", dispatcher_socket)
    app.router.add_get("/dispatch/{dispatcher}", dispatch_page)
    app.router.add_get("/api/v1/districts", require("dispatcher")(districts))
    app.router.add_get("/api/v1/abandoned", require("dispatcher")(abandoned))
    app.router.add_post("/api/v1/abandoned/{call_id}/callback-done", require("dispatcher")(callback_done))

    app.router.add_post("/aml/v1/https", require("aml")(aml.https_delivery))
    app.router.add_post("/aml/v1/sms", require("aml")(aml.sms_delivery))
    return app
