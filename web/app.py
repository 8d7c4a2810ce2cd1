"""aiohttp application of the service: middlewares and the route table. Every route but two needs a token.

Routes, with the access they need (web.auth: look = read, supervisor or admin;
rules = admin; callers = dispatcher or supervisor; map = all but aml):
- GET  /healthz                  none     200 while the event loop runs (web.health; no data)
- GET  /readyz                   none     200 ready / 503 not, which parts are up (web.health; no data)
- GET  /api/v1/status            look     the site's health
- GET  /metrics                  look     Prometheus metrics
- GET  /api/v1/rules             look     the rules in force
- PUT  /api/v1/rules[?dry_run=1] rules    upload new rules (YAML body): validated, then swapped in
- POST /api/v1/rules/reload      rules    re-read the rules file from disk
- POST /api/v1/rules/simulate    look     where would this call go (JSON body)
- GET  /api/v1/rules/audit       look     who changed the rules, when, what
- GET  /api/v1/supervisor        look     both centres live: callers waiting, desks, overflow moves
- GET  /supervisor?token=        look     the supervisor page (polls the JSON above)
- GET  /dispatch/<name>?token=   the dispatcher <name> only: the dispatcher page
- GET  /ws/v1/dispatchers/<name> the dispatcher <name> only: their screen pops (web.notifier); the token
                                          in the Authorization header or the first message
- GET  /api/v1/districts         map      the district polygons
- GET  /api/v1/abandoned         callers  the callback list (caller numbers)
- POST /api/v1/abandoned/<id>/callback-done  callers  a call called back
- POST /aml/v1/https, /aml/v1/sms  aml    AML intake (web.aml), a token or a signed delivery
- GET  /api/v1/openapi.yaml      describe this API's OpenAPI description (web/openapi.yaml): every route
                                          above with its roles, bodies and answers

The web layer gets what it needs as WebPorts (web.ports): Protocols of the
features, never the composition root. Errors of the layers below map to HTTP
in one middleware: the store not answering is 503 (retry), rules refused 422.
The listener's limits (connections, request head and body time) are in web.limits.
"""

from __future__ import annotations

import functools
import logging
import time
from pathlib import Path

import prometheus_client as prom
import shapely.geometry
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from routing.decision import AmlFix
from routing.location import CivicAddress, LocationError, Position
from routing.pidf import parse_pidf_lo
from routing.rules import RulesError
from routing.simulation import as_dict, explain, simulate
from verbund112.store import StoreError
from web import aml, health
from web.auth import (
    SCREEN_PATH,
    Handler,
    PathOnlyAccessLogger,
    authenticate,
    dispatcher_of,
    error,
    no_referrer,
    own_dispatcher,
    require,
)
from web.limits import CLOSED, ConnectionGuard, GuardedSite, read_body
from web.notifier import DispatcherScreens
from web.ports import GRANT, PORTS, WebPorts

log = logging.getLogger(__name__)

MAX_RULES_BYTES = 1024 * 1024
SCREENS: web.AppKey[DispatcherScreens] = web.AppKey("screens", DispatcherScreens)


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """HTTP errors as JSON; the lower layers' error roots mapped to a status."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error(exc.status, exc.reason)
    except StoreError as exc:
        log.warning("HTTP %s %s: the store did not answer (%s)", request.method, request.path, exc)
        return error(503, f"the Verbund's store did not answer, retry: {exc}")
    except RulesError as exc:
        return error(422, "rules refused; the rules in force are unchanged", problems=exc.problems)


@require("look")
async def status(request: web.Request) -> web.Response:
    return web.json_response(request.app[PORTS].status())


@require("look")
async def metrics(request: web.Request) -> web.Response:
    body = prom.generate_latest(request.app[PORTS].registry)
    return web.Response(body=body, headers={"Content-Type": prom.CONTENT_TYPE_LATEST})


@require("look")
async def get_rules(request: web.Request) -> web.Response:
    admin = request.app[PORTS].rules
    rules = admin.rules
    if rules is None:
        return error(503, "no valid rules loaded", problems=admin.last_error)
    return web.json_response(
        {
            "source": rules.source,
            "digest": rules.digest,
            "rules": rules.spec.model_dump(mode="json"),
            "area_codes": len(rules.area_codes),
            "cells": len(rules.cells),
            "municipalities": len(rules.municipalities),
            "districts": [{"ags": d.ags, "name": d.name} for d in rules.index.districts],
        }
    )


@require("rules")
async def put_rules(request: web.Request) -> web.Response:
    dry_run = request.query.get("dry_run", "0").lower() in ("1", "true", "yes")
    try:
        text = (await read_body(request, MAX_RULES_BYTES)).decode("utf-8")
    except UnicodeDecodeError:
        return error(400, "the rules must be UTF-8 YAML")
    change = await request.app[PORTS].rules.change(request[GRANT].name, text=text, dry_run=dry_run)
    return web.json_response(
        {"applied": change.applied, "old": change.old_digest, "new": change.new_digest, "changes": change.changes}
    )


@require("rules")
async def reload_rules(request: web.Request) -> web.Response:
    change = await request.app[PORTS].rules.change(request[GRANT].name)
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


@require("look")
async def simulate_call(request: web.Request) -> web.Response:
    rules = request.app[PORTS].rules.rules
    if rules is None:
        return error(503, "no valid rules loaded")
    try:
        ask = SimulationRequest.model_validate_json(await read_body(request, MAX_RULES_BYTES))
    except ValidationError as exc:
        return error(400, "bad simulation request", problems=[f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                                                               for e in exc.errors()])  # fmt: skip
    if ask.site not in rules.spec.sites:
        return error(400, f"unknown site {ask.site!r}")
    position, civic, problem = _position(ask)
    now = time.time()
    aml = None
    if ask.aml_lat is not None and ask.aml_lon is not None:
        aml = AmlFix(Position(ask.aml_lat, ask.aml_lon, ask.aml_radius_m, "Circle", "AML"), now - ask.aml_age_s)
    alive = frozenset(rules.spec.sites) if ask.partner_reporting else frozenset({ask.site})
    decision = simulate(rules, number=ask.number, site=ask.site, position=position, pidf_problem=problem,
                        cell_id=ask.cell, aml=aml, alive_sites=alive, now=now, civic=civic)  # fmt: skip
    return web.json_response({"decision": as_dict(decision), "explanation": explain(decision)})


def _position(ask: SimulationRequest) -> tuple[Position | None, CivicAddress | None, str]:
    if ask.pidf is not None:
        try:
            found = parse_pidf_lo(ask.pidf)
        except LocationError as exc:
            return None, None, str(exc)
        # shapes skipped beside a usable one are no problem of the routing
        return found.position, found.civic, "" if found.position else "; ".join(found.problems)
    if ask.lat is not None and ask.lon is not None:
        return Position(ask.lat, ask.lon, ask.radius_m, "Circle" if ask.radius_m else "Point", "simulated"), None, ""
    return None, None, ""


@require("look")
async def audit(request: web.Request) -> web.Response:
    return web.json_response({"entries": await request.app[PORTS].rules.audit_trail()})


@require("describe")
async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=_openapi_document(), content_type="application/yaml")


@functools.cache
def _openapi_document() -> bytes:
    return (Path(__file__).resolve().parent / "openapi.yaml").read_bytes()  # once: no disk read on the loop after


STATIC = Path(__file__).resolve().parent / "static"
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'self'; script-src 'unsafe-inline' 'self'; "
    "style-src 'unsafe-inline' 'self'; connect-src 'self'",
}


async def dispatch_page(request: web.Request) -> web.StreamResponse:
    """The dispatcher's page (token in the query: the page passes it on to the API and WebSocket)."""
    if own_dispatcher(request) is None:
        return error(403, "the page only for the dispatcher the token belongs to")
    return web.FileResponse(STATIC / "dispatch.html", headers=PAGE_HEADERS)


@require("look")
async def supervisor_page(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC / "supervisor.html", headers=PAGE_HEADERS)


@require("look")
async def supervisor_view(request: web.Request) -> web.Response:
    """Both centres as this site sees them; the partner from its report (or "unknown")."""
    return web.json_response(await request.app[PORTS].supervision.view(time.time()))


async def districts(request: web.Request) -> web.Response:
    """The district polygons of the rules in force, for the map (no external tile server)."""
    rules = request.app[PORTS].rules.rules
    if rules is None:
        return error(503, "no valid rules loaded")
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
    screens, ports = request.app[SCREENS], request.app[PORTS]
    dispatcher = request.match_info["dispatcher"]
    if GRANT not in request:  # no header: the screen signs in with its first message

        def seat_of(token: str) -> str | None:
            return dispatcher_of(token, ports.web.tokens)

        return await screens.serve(request, dispatcher, ports.cards, seat_of)
    if own_dispatcher(request) is None:
        screens.refused.labels("not-theirs").inc()
        return error(403, "screen pops only for the dispatcher the token belongs to")
    return await screens.serve(request, dispatcher, ports.cards)


async def abandoned(request: web.Request) -> web.Response:
    return web.json_response(await request.app[PORTS].cards.abandoned_message())


async def callback_done(request: web.Request) -> web.Response:
    call_id = request.match_info["call_id"][:80]
    if not await request.app[PORTS].cards.callback_done(call_id):
        return error(404, "no such abandoned call (already called back?)")
    log.info("callback of abandoned call %s done by %s", call_id, request[GRANT].name)
    return web.json_response({"done": call_id, "by": request[GRANT].name})


def make_app(ports: WebPorts, screens: DispatcherScreens, guard: ConnectionGuard) -> web.Application:
    app = web.Application(
        middlewares=[guard.middleware(), errors, authenticate], client_max_size=MAX_RULES_BYTES + 1024
    )
    app[PORTS] = ports
    app[SCREENS] = screens
    app[CLOSED] = guard.closed

    async def close_screens(_: web.Application) -> None:
        await screens.close_all()

    app.on_shutdown.append(close_screens)
    app.on_response_prepare.append(no_referrer)
    app.router.add_get("/healthz", health.healthz)
    app.router.add_get("/readyz", health.readyz)
    app.router.add_get("/api/v1/status", status)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/v1/rules", get_rules)
    app.router.add_put("/api/v1/rules", put_rules)
    app.router.add_post("/api/v1/rules/reload", reload_rules)
    app.router.add_post("/api/v1/rules/simulate", simulate_call)
    app.router.add_get("/api/v1/rules/audit", audit)
    app.router.add_get("/api/v1/supervisor", supervisor_view)
    app.router.add_get("/supervisor", supervisor_page)
    app.router.add_get(SCREEN_PATH + "{dispatcher}", dispatcher_socket)
    app.router.add_get("/dispatch/{dispatcher}", dispatch_page)
    app.router.add_get("/api/v1/districts", require("map")(districts))
    app.router.add_get("/api/v1/abandoned", require("callers")(abandoned))
    app.router.add_post("/api/v1/abandoned/{call_id}/callback-done", require("callers")(callback_done))
    app.router.add_post("/aml/v1/https", require("aml")(aml.https_delivery))
    app.router.add_post("/aml/v1/sms", require("aml")(aml.sms_delivery))
    app.router.add_get("/api/v1/openapi.yaml", openapi)
    return app


async def serve(ports: WebPorts, screens: DispatcherScreens) -> web.AppRunner:
    """The HTTP listener, started behind its limits; the caller stops it with ``runner.cleanup()``."""
    guard = ConnectionGuard(ports.web, ports.registry)
    runner = web.AppRunner(
        make_app(ports, screens, guard), handle_signals=False, shutdown_timeout=5.0,
        access_log=logging.getLogger("web.access") if ports.web.access_log else None,
        access_log_class=PathOnlyAccessLogger,
    )  # fmt: skip
    await runner.setup()
    try:
        await GuardedSite(runner, ports.web.host, ports.web.port, guard).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner
