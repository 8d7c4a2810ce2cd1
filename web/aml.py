"""AML intake (ETSI TS 103 625): handsets' positions pushed by HTTPS or through an SMS gateway.

Tolerant where real handsets are sloppy, strict where it matters (aml/parse.py).
A message that cannot be used gets 202 with stored false and the reason (see _refuse),
is logged (without the position) and counted;
a good one is stored in Redis under the caller's E.164 number, expiring after
aml.retention_s, and announced on the AML update channel; the answer comes once
the master has it (a fix no replica acknowledged yet is kept by the service and
written again, see verbund112/features/aml_sink.py). If no Redis master can take
it the sender gets 503 and retries: nothing is lost silently.
"""

from __future__ import annotations

import json
import logging
import time

from aiohttp import web
from pydantic import ValidationError

from aml.parse import AmlError, AmlMessage, form_fields, parse_https_body, parse_sms
from routing.decision import AmlFix
from verbund112.store import StoreError
from verbund112.store.records import AmlFixRecord
from web.limits import read_body
from web.ports import PORTS

log = logging.getLogger(__name__)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def _body(request: web.Request) -> bytes:
    return await read_body(request, request.app[PORTS].aml.max_body_bytes)


async def https_delivery(request: web.Request) -> web.Response:
    body = await _body(request)
    try:
        message = parse_https_body(body)
    except AmlError as exc:
        return _refuse(request, "https", exc)
    return await _accept(request, message)


async def sms_delivery(request: web.Request) -> web.Response:
    """From an SMS gateway: form fields or JSON `from` (originator) and `text`."""
    body = await _body(request)
    try:
        if request.content_type == "application/json":
            try:
                data = json.loads(body)
            except ValueError as exc:
                raise AmlError("not JSON") from exc
            if not isinstance(data, dict):
                raise AmlError("JSON body must be an object with from and text")
        else:
            data = form_fields(body)
        text, sender = data.get("text"), data.get("from")
        if not isinstance(text, str) or not (sender is None or isinstance(sender, str)):
            raise AmlError("text (and from) must be strings")
        message = parse_sms(text, sender)
    except AmlError as exc:
        return _refuse(request, "sms", exc)
    return await _accept(request, message)


def _refuse(request: web.Request, kind: str, exc: AmlError | str) -> web.Response:
    """A message we cannot use: 202, stored false, with the reason; logged and counted.

    Not a 4xx: Google's ELS specification (the AML HTTPS format's only published one) asks
    endpoints to answer 2xx even for messages they throw away, because a handset or gateway
    that retries on any other answer would send the same unusable message again and again
    during the emergency call. It never becomes usable by retrying. The operator learns of
    refusals from verbund112_aml_messages{outcome="refused"} (alert Verbund112AmlIntakeRefusing)
    and the WARNING with the reason; the sender from "refused" in the answer.
    A wrong token or signature (401/403), an oversized body (413) and a store that cannot
    take the fix (503: retry) keep their status: those are no message of a caller.
    """
    request.app[PORTS].aml_messages.labels(kind, "refused").inc()
    log.warning("AML %s message refused: %s", kind, exc)
    return web.json_response({"stored": False, "refused": str(exc)}, status=202)


async def _accept(request: web.Request, message: AmlMessage) -> web.Response:
    ports = request.app[PORTS]
    counted = ports.aml_messages
    kind = message.format
    if message.number is None:
        return _refuse(request, kind, "no caller number in the message or from the gateway")
    if message.position is None:
        counted.labels(kind, "no-fix").inc()
        log.info("AML %s message without a fix for a caller", kind)
        return web.json_response({"stored": False, "reason": "the handset had no fix"}, status=202)
    fix = AmlFix(message.position, message.fix_time or time.time())
    try:
        record = AmlFixRecord.of(fix, time.time(), confidence=message.confidence, format=message.format,
                                 altitude_m=message.altitude_m)  # fmt: skip
    except ValidationError as exc:  # aml.parse checks the same ranges; this is the last line
        return _refuse(request, kind, AmlError(f"values out of range ({exc.error_count()} problems)"))
    try:
        await ports.aml_sink.add_aml_fix(message.number, record, ports.aml.retention_s)
    except StoreError as exc:
        counted.labels(kind, "unavailable").inc()
        log.error("AML %s message not stored (Redis: %s); the sender is told to retry", kind, exc)
        return _error(503, "AML store unavailable, retry")
    counted.labels(kind, "stored").inc()
    log.info("AML %s fix stored for a caller", kind)
    log.debug("AML fix %s %.5f %.5f r=%.0f", message.number, fix.position.lat, fix.position.lon, fix.position.radius_m)
    return web.json_response({"stored": True}, status=202)
