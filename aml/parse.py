"""AML messages (ETSI TS 103 625) as handsets really send them, parsed into one record.

Three wire forms arrive:

* SMS version 1 (ETSI): ``A"ML=1;lt=+50.92720;lg=+11.58640;rd=15;top=20250101120000;lc=68;pm=G;...``
* SMS version 2 (Android "ELS Beta"): ``A"ML=2;en=112;et=1735732800;lo=50.9272,11.5864,15.0;lt=5;...``
* HTTPS, a form-urlencoded POST whose decoded fields are handed in as a mapping.

Tolerant where handsets are sloppy (a wrong ``ml``, ``rd=N``, missing or unknown fields, key case,
whitespace), strict where a wrong value would put a caller in the wrong place: coordinates, radius,
times and numbers are refused with a reason (:class:`AmlError`) rather than guessed at.

The v2 ``en`` field and the HTTPS ``emergency_number`` field hold the number that was *dialled*
(112; Google's ELS specification: "Emergency Number", example 911), never the caller's: the caller is
the SMS originator (``sender``) or the HTTPS ``device_number``.

A position without an accuracy (v1 without ``rd``, v2 accuracy 0 = "unknown", HTTPS without
``location_accuracy``) becomes a ``Point`` with radius 0, as in :mod:`routing.location`; a fix at
exactly 0,0 is the handsets' "no location" filler and counts as no fix.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import parse_qsl

from routing.location import MAX_RADIUS_M, Position
from routing.numbers import NumberError, to_e164

MAX_SMS_LENGTH = 1000
MAX_FIELD_LENGTH = 200
MAX_SENDER_LENGTH = 64
# Unix times up to 2100-01-01 (seconds); later ones are garbage, not a handset clock off by a few years.
MAX_UNIX_S = 4_102_444_800
METHODS = ("GNSS", "WiFi", "Cell", "Fused", "Unknown")

# Plain decimals, also Java's exponent form (Double.toString writes 1.0E-4)
_NUMBER = re.compile(r"[+-]?(?:[0-9]{1,12}(?:\.[0-9]{0,20})?|\.[0-9]{1,20})(?:[eE][+-]?[0-9]{1,3})?")
_UNIX = re.compile(r"[0-9]{1,15}(?:\.[0-9]{0,6})?")
_INTEGER = re.compile(r"[+-]?[0-9]{1,10}")
_TOP = re.compile(r"[0-9]{14}")
_IDENTITY = re.compile(r"[0-9]{1,20}")
_MCC = re.compile(r"[0-9]{3}")
_MNC = re.compile(r"[0-9]{2,3}")
_MCC_MNC = re.compile(r"[0-9]{5,6}")
_UNENCODED_PLUS = re.compile(r" [1-9][0-9]{5,14}")

_V1_METHODS = {"G": "GNSS", "W": "WiFi", "C": "Cell"}
_V2_METHODS = {"G": "GNSS", "W": "WiFi", "C": "Cell", "F": "Fused", "U": "Unknown"}
_HTTPS_METHODS = {"gps": "GNSS", "wifi": "WiFi", "cell": "Cell"}

_V1_KEYS = frozenset({"lt", "lg", "rd", "top", "lc", "pm", "si", "ei", "mcc", "mnc"})
_V2_KEYS = frozenset({"et", "lo", "lt", "lc", "lz", "ls", "ei", "nc"})
# The fields of the AML HTTPS format (and of the central server's answers, aml.pull).
HTTPS_FIELDS = (
    "time",
    "location_time",
    "location_latitude",
    "location_longitude",
    "location_accuracy",
    "location_confidence",
    "location_source",
    "location_altitude",
    "device_number",
    "device_imei",
    "device_imsi",
    "cell_network_mcc",
    "cell_network_mnc",
)
_HTTPS_KEYS = frozenset(HTTPS_FIELDS)


class AmlError(ValueError):
    """The AML message cannot be used; the message says why."""


@dataclass(frozen=True, slots=True)
class AmlMessage:
    """One AML report: who called, where the handset was and how sure it is."""

    number: str | None  # caller in E.164, None if unknown
    position: Position | None  # None when the handset had no fix
    confidence: float | None  # 0..1
    method: str  # one of METHODS
    fix_time: float | None  # Unix seconds (UTC) when the position was determined
    imei: str | None
    imsi: str | None
    network: str | None  # serving MCC+MNC, e.g. "26201"
    altitude_m: float | None
    format: str  # "sms-v1", "sms-v2" or "https"


def parse_sms(text: str, sender: str | None = None) -> AmlMessage:
    """An AML SMS (version 1 or 2); ``sender`` is the originator the SMS gateway reports."""
    if not isinstance(text, str):
        raise AmlError("message is not text")
    if len(text) > MAX_SMS_LENGTH:
        raise AmlError(f"message too long: {len(text)} characters, at most {MAX_SMS_LENGTH}")
    body = text.strip()
    if not body:
        raise AmlError("empty message")
    header, _, rest = body.partition(";")
    name, equals, version = header.partition("=")
    if name.strip().upper() != 'A"ML' or not equals:
        raise AmlError('not an AML message: no A"ML= header')
    version = version.strip()
    if version == "1":
        return _parse_v1(_sms_fields(rest, _V1_KEYS), sender)
    if version == "2":
        return _parse_v2(_sms_fields(rest, _V2_KEYS), sender)
    raise AmlError(f"unsupported AML version {version[:10]!r}")


def form_fields(body: bytes) -> dict[str, str]:
    """An application/x-www-form-urlencoded body as its fields (AmlError if it is not one)."""
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body), max_num_fields=64)
    except (UnicodeDecodeError, ValueError) as exc:
        raise AmlError(f"not a form-encoded body: {exc}") from exc
    return dict(pairs)


def parse_https_body(body: bytes) -> AmlMessage:
    """An AML HTTPS POST's raw form body."""
    return parse_https(form_fields(body))


def parse_https(fields: Mapping[str, str]) -> AmlMessage:
    """The decoded fields of an AML HTTPS POST (every field optional)."""
    values: dict[str, str] = {}
    for key, value in fields.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise AmlError("form field is not text")
        if len(key) > MAX_FIELD_LENGTH or len(value) > MAX_FIELD_LENGTH:
            raise AmlError(f"form field {key[:30]!r} too long, at most {MAX_FIELD_LENGTH} characters")
        # Form decoding turns a '+' that was not percent-encoded into a space (senders that build
        # the body by hand forget it): " 4915..." is "+4915...". The pull path copes with the
        # server's "4915..." the same way (aml.pull).
        plus_repaired = key.strip().lower() == "device_number" and _UNENCODED_PLUS.fullmatch(value)
        _store(values, key, "+" + value[1:] if plus_repaired else value, _HTTPS_KEYS)

    _unix_ms(values.get("time"), "time")  # call start: not kept, but a garbled one means a garbled message
    fix_time = _unix_ms(values.get("location_time"), "location_time")
    method = _HTTPS_METHODS.get(values.get("location_source", "").lower(), "Unknown")
    position = _position(
        values.get("location_latitude"),
        values.get("location_longitude"),
        values.get("location_accuracy"),
        method,
    )
    confidence = _fraction(values.get("location_confidence"))
    mcc, mnc = values.get("cell_network_mcc", ""), values.get("cell_network_mnc", "")
    network = mcc + mnc if _MCC.fullmatch(mcc) and _MNC.fullmatch(mnc) else None
    return _finish(
        number=_number(values.get("device_number")),
        position=position,
        confidence=confidence,
        method=method,
        fix_time=fix_time,
        imei=_identity(values.get("device_imei")),
        imsi=_identity(values.get("device_imsi")),
        network=network,
        altitude_m=_optional_float(values.get("location_altitude")),
        format="https",
    )


def _parse_v1(fields: dict[str, str], sender: str | None) -> AmlMessage:
    pm = fields.get("pm", "").upper()
    method = _V1_METHODS.get(pm, "Unknown")
    no_fix = pm == "N" or fields.get("rd", "").upper() == "N"
    position = None if no_fix else _position(fields.get("lt"), fields.get("lg"), fields.get("rd"), method)
    mcc, mnc = fields.get("mcc", ""), fields.get("mnc", "")
    return _finish(
        number=_number(sender),
        position=position,
        confidence=_percent(fields.get("lc")),
        method=method,
        fix_time=_top(fields.get("top")),
        imei=_identity(fields.get("ei")),
        imsi=_identity(fields.get("si")),
        network=mcc + mnc if _MCC.fullmatch(mcc) and _MNC.fullmatch(mnc) else None,
        altitude_m=None,
        format="sms-v1",
    )


def _parse_v2(fields: dict[str, str], sender: str | None) -> AmlMessage:
    method = _V2_METHODS.get(fields.get("ls", "").upper(), "Unknown")
    position = None
    location = fields.get("lo", "")
    if location and location.upper() != "N":
        parts = [part.strip() for part in location.split(",")]
        if len(parts) not in (2, 3):
            raise AmlError(f"lo must be 'lat,lon,accuracy' ({len(parts)} parts given)")  # never the position
        accuracy = parts[2] if len(parts) == 3 else None
        if accuracy is not None and _float(accuracy) == 0:
            accuracy = None  # "an accuracy of 0 represents unknown"
        position = _position(parts[0], parts[1], accuracy, method)

    call_start = _unix_seconds(fields.get("et"), "et (call start, Unix seconds)")
    offset = _integer(fields.get("lt"), "lt (seconds after et)")
    fix_time = None
    if call_start is not None and offset is not None and offset >= 0:  # handsets send lt=-9999 for "unknown"
        fix_time = call_start + offset
        if fix_time > MAX_UNIX_S:
            raise AmlError(f"lt puts the fix after the year 2100: {offset}")

    altitude_text = fields.get("lz", "").split(",")[0].strip()
    nc = fields.get("nc", "")
    return _finish(
        number=_number(sender),  # `en` is the dialled emergency number, not the caller
        position=position,
        confidence=_percent(fields.get("lc")),
        method=method,
        fix_time=fix_time,
        imei=_identity(fields.get("ei")),
        imsi=None,
        network=nc if _MCC_MNC.fullmatch(nc) else None,
        altitude_m=_optional_float(altitude_text),
        format="sms-v2",
    )


def _finish(
    *,
    number: str | None,
    position: Position | None,
    confidence: float | None,
    method: str,
    fix_time: float | None,
    imei: str | None,
    imsi: str | None,
    network: str | None,
    altitude_m: float | None,
    format: str,
) -> AmlMessage:
    if position is None and number is None:
        raise AmlError("nothing usable: neither a position nor a caller number")
    return AmlMessage(
        number=number,
        position=position,
        confidence=confidence if position is not None else None,
        method=method if position is not None else "Unknown",
        fix_time=fix_time if position is not None else None,
        imei=imei,
        imsi=imsi,
        network=network,
        altitude_m=altitude_m if position is not None else None,
        format=format,
    )


def _sms_fields(text: str, used: frozenset[str]) -> dict[str, str]:
    fields: dict[str, str] = {}
    for part in text.split(";"):
        key, equals, value = part.partition("=")
        if equals:  # a fragment without '=' carries nothing
            _store(fields, key, value, used)
    return fields


def _store(fields: dict[str, str], key: str, value: str, used: frozenset[str]) -> None:
    """Keys case-insensitive, values stripped, empty values absent; conflicting repeats refused."""
    key, value = key.strip().lower(), value.strip()
    if key not in used or not value:
        return
    if fields.get(key, value) != value:
        raise AmlError(f"{key} given twice with different values")
    fields[key] = value


def _float(text: str) -> float | None:
    if not _NUMBER.fullmatch(text):
        return None
    value = float(text)
    return value if math.isfinite(value) else None


def _optional_float(text: str | None) -> float | None:
    return _float(text) if text else None


def _position(lat_text: str | None, lon_text: str | None, radius_text: str | None, method: str) -> Position | None:
    """Coordinates (and an optional radius); None when neither coordinate is given."""
    if lat_text is None and lon_text is None:
        return None
    if lat_text is None or lon_text is None:
        raise AmlError("a coordinate is missing: latitude and longitude come in pairs")
    lat = _coordinate(lat_text, "latitude", 90.0)
    lon = _coordinate(lon_text, "longitude", 180.0)
    if lat == 0 and lon == 0:
        return None  # the "no location" filler (+00.00000 / +000.00000)
    if radius_text is None:
        return Position(lat, lon, 0.0, "Point", method)
    radius = _float(radius_text)
    if radius is None:
        raise AmlError(f"radius is not a number: {radius_text[:20]!r}")
    if radius < 0:
        raise AmlError(f"negative radius: {radius_text[:20]}")
    if radius > MAX_RADIUS_M:
        raise AmlError(f"radius absurdly large: {radius_text[:20]} m (at most {MAX_RADIUS_M:.0f})")
    return Position(lat, lon, radius, "Circle", method)


def _coordinate(text: str, name: str, limit: float) -> float:
    value = _float(text)
    if value is None:
        raise AmlError(f"{name} is not a number")  # the reason is logged: never the coordinate itself
    if not -limit <= value <= limit:
        raise AmlError(f"{name} out of range (allowed -{limit:.0f}..{limit:.0f})")
    return value


def _percent(text: str | None) -> float | None:
    """Confidence in percent -> fraction; a garbled value only loses the confidence."""
    value = _optional_float(text)
    return value / 100 if value is not None and 0 <= value <= 100 else None


def _fraction(text: str | None) -> float | None:
    value = _optional_float(text)
    return value if value is not None and 0 <= value <= 1 else None


def _identity(text: str | None) -> str | None:
    """IMEI / IMSI: digits only, else dropped (they are for matching, not for routing)."""
    return text if text is not None and _IDENTITY.fullmatch(text) else None


def _number(raw: str | None) -> str | None:
    if raw is None or not raw.strip():
        return None
    if len(raw) > MAX_SENDER_LENGTH:
        raise AmlError(f"malformed number: longer than {MAX_SENDER_LENGTH} characters")
    try:
        return to_e164(raw)
    except NumberError as exc:
        raise AmlError(f"malformed number: {exc}") from exc


def _in_range(seconds: float, name: str, text: str) -> float:
    if not 0 <= seconds <= MAX_UNIX_S:
        raise AmlError(f"{name} is not a plausible time: {text[:20]}")
    return seconds


def _unix_seconds(text: str | None, name: str) -> float | None:
    if text is None:
        return None
    if not _UNIX.fullmatch(text):
        raise AmlError(f"unparseable {name}: {text[:20]!r}")
    return _in_range(float(text), name, text)


def _unix_ms(text: str | None, name: str) -> float | None:
    if text is None:
        return None
    if not _UNIX.fullmatch(text):
        raise AmlError(f"unparseable {name} (Unix milliseconds): {text[:20]!r}")
    return _in_range(float(text) / 1000, f"{name} (Unix milliseconds)", text)


def _integer(text: str | None, name: str) -> int | None:
    if text is None:
        return None
    if not _INTEGER.fullmatch(text):
        raise AmlError(f"unparseable {name}: {text[:20]!r}")
    return int(text)


def _top(text: str | None) -> float | None:
    """v1 ``top``: yyyyMMddHHmmss in UTC."""
    if text is None:
        return None
    if not _TOP.fullmatch(text):
        raise AmlError(f"unparseable top (yyyyMMddHHmmss UTC): {text[:20]!r}")
    try:
        moment = datetime(
            int(text[0:4]),
            int(text[4:6]),
            int(text[6:8]),
            int(text[8:10]),
            int(text[10:12]),
            int(text[12:14]),
            tzinfo=UTC,
        )
    except ValueError as exc:
        raise AmlError(f"unparseable top (yyyyMMddHHmmss UTC): {text!r} is not a date") from exc
    return _in_range(moment.timestamp(), "top", text)
