"""Liveness and readiness, without a token and without data: for the service manager, load
balancers and monitoring.

- ``GET /healthz``: 200 while the event loop runs (it answers, so it runs).
- ``GET /readyz``: 200 when the service can take calls, 503 when it cannot; the body names
  each part up or down. AMI, FastAGI and the rules are needed: without AMI the site's calls
  are not followed (no cards, no overflow moves, no callback list), without FastAGI or rules
  every call takes the dialplan's own route. All three are the site's own, so a restart or
  an operator at the site can mend them.
  The store (Redis) down is *ready, degraded*: routing needs no store (PIDF-LO, Ortsnetz,
  trunk), cards still go out with what the site knows, and the store is shared by both
  sites: counting it as not-ready would take both sites out of service at once for a part
  neither can mend, while each still takes every call.
"""

from __future__ import annotations

import dataclasses

from aiohttp import web

from web.ports import PORTS, Health

PUBLIC_PATHS = frozenset({"/healthz", "/readyz"})
NEEDED = ("ami", "fastagi", "rules")  # down: 503
DEGRADING = ("store",)  # down: still 200, named in "degraded"


def readiness(health: Health) -> tuple[bool, dict[str, object]]:
    parts = dataclasses.asdict(health)
    down = [name for name in NEEDED if not parts[name]]
    degraded = [name for name in DEGRADING if not parts[name]]
    body: dict[str, object] = {
        "ready": not down,
        "parts": {name: "up" if up else "down" for name, up in parts.items()},
        "down": down,
        "degraded": degraded,
    }
    return not down, body


async def healthz(_: web.Request) -> web.Response:
    return web.json_response({"alive": True}, headers={"Cache-Control": "no-store"})


async def readyz(request: web.Request) -> web.Response:
    ready, body = readiness(request.app[PORTS].health())
    return web.json_response(body, status=200 if ready else 503, headers={"Cache-Control": "no-store"})
