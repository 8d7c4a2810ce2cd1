"""Fetching AML from the central server by calling number (the German "pull").

In Germany handsets send their AML to central endpoints, and each Leitstelle
fetches it by the caller's number over HTTPS with a client certificate and
HTTP basic auth. The servers' interface is not published; what is known comes
from a Leitstelle's own client (github.com/erfurtjohn/advanced-mobile-location):

* ``GET <url>?number=<number>``, ``Accept: application/json``;
* the answer is a JSON array of objects named like the fields of the AML HTTPS
  format (``location_latitude``, ``location_longitude``, ``location_accuracy``,
  ``location_source``, ``location_altitude``, ``location_time``, ...) with
  ``"status": "ok"``, or ``[{"status": "no aml data"}]`` when there is none;
* values are JSON numbers or strings; ``location_time`` is written as a date
  and time (``2019-10-17 09:27:29``) whose zone is not stated
  (``aml_pull.time_zone``); Unix milliseconds, as in the HTTPS format, work too.

This module also takes 404 and 204 as "no fix yet", a single object instead of
an array, and refuses redirects (the credentials never go anywhere else).
Every entry goes through :func:`aml.parse.parse_https`, so pulled AML meets the
same strict/tolerant rules as pushed AML; an entry naming another number than
the one asked for, or a fix time well in the future (a zone set wrong), is
skipped with the reason. :func:`parse_answer` and :func:`backoff` are pure;
:class:`AmlPullClient` is the I/O edge, each request bounded by a timeout.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import re
import ssl
import time
import zoneinfo
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Self
from zoneinfo import ZoneInfo

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from aml.parse import HTTPS_FIELDS, AmlError, AmlMessage, parse_https
from routing.numbers import national_form

MAX_BODY_BYTES = 256 * 1024
MAX_ENTRIES = 100
# A fix time this far ahead of our clock is a zone or clock set wrong, not a fix.
FUTURE_TOLERANCE_S = 300.0
NO_DATA = "no aml data"
# Outcomes of one request, as counted in verbund112_aml_pull_requests{outcome}.
OUTCOMES = ("fix", "no-fix", "timeout", "tls", "unreachable", "refused", "http-error", "bad-response")

_TIME_FIELDS = ("time", "location_time")
_DATE_TIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[ T][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]{1,6})?)?(?:Z|[+-][0-9]{2}:?[0-9]{2})?"
)


class AmlPullSettings(BaseModel):
    """Fetching AML from the central server by calling number (HTTPS, client certificate, basic auth).

    While a 112 call that entered here is live and the AML store has no fix of
    this call for its number, the service asks the server with back-off (see
    verbund112/features/aml_polls.py). Secrets (password, key password) from the environment.
    Settings section `aml_pull`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = False
    # the lookup URL; the number goes into the query parameter `number`
    url: str = ""
    number_format: Literal["e164", "international", "national"] = "e164"
    client_cert: Path | None = None  # PEM: the certificate (and the key, unless client_key is set)
    client_key: Path | None = None
    client_key_password: SecretStr = SecretStr("")
    ca_file: Path | None = None  # PEM CAs that may sign the server's certificate; none: the system's
    username: str = ""
    password: SecretStr = SecretStr("")
    request_timeout: float = Field(default=3.0, gt=0, le=30, description="one request, seconds")
    backoff_first: float = Field(default=2.0, gt=0, description="wait after the first answer without a fix")
    backoff_factor: float = Field(default=1.5, ge=1.0, le=10.0)
    backoff_max: float = Field(default=10.0, gt=0, description="back-off cap, seconds")
    max_duration: float = Field(default=180.0, gt=0, le=3600, description="a call's polling ends after this")
    max_polls: int = Field(default=100, ge=1, le=10000, description="calls polled at once; more are not polled")
    # zone of the server's location_time when it is written as a date and time without offset
    time_zone: str = "Europe/Berlin"

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @model_validator(mode="after")
    def _complete_when_enabled(self) -> AmlPullSettings:
        if not self.enabled:
            return self
        missing = [name for name in ("url", "client_cert", "username") if not getattr(self, name)]
        if not self.password.get_secret_value():
            missing.append("password")
        if missing:
            raise ValueError(f"AML pull enabled, but {', '.join(missing)} not set")
        if ":" in self.username:
            raise ValueError("username may not contain ':' (HTTP basic auth)")
        if not self.url.startswith("https://"):
            raise ValueError("url must be https://")
        if self.backoff_max < self.backoff_first:
            raise ValueError("backoff_max is below backoff_first")
        return self


class PullError(Exception):
    """One request brought nothing usable; ``outcome`` is its metric label."""

    def __init__(self, outcome: str, message: str) -> None:
        super().__init__(message)
        self.outcome = outcome


class PullSetupError(ValueError):
    """The client cannot be built: certificate, key or CA file unreadable or wrong."""


@dataclass(frozen=True, slots=True)
class PullAnswer:
    fixes: tuple[AmlMessage, ...]  # each with a position, oldest first, the best last
    problems: tuple[str, ...] = ()  # entries skipped, and why

    @property
    def best(self) -> AmlMessage | None:
        """The newest fix, the most accurate of its time: what the dispatcher sees."""
        return self.fixes[-1] if self.fixes else None


def server_number(e164: str, number_format: str) -> str:
    """The number as the server wants it: +4915..., 4915... or 015... (foreign numbers 00...)."""
    if number_format == "international":
        return e164[1:]
    if number_format == "national":
        return national_form(e164) or "00" + e164[1:]
    return e164


def basic_auth(username: str, password: str) -> str:
    """The Authorization header value (RFC 7617, UTF-8; aiohttp 3.14 deprecates its BasicAuth)."""
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


def backoff(first: float, factor: float, cap: float) -> Iterator[float]:
    """first, first*factor, ... never more than cap."""
    delay = first
    while True:
        yield min(delay, cap)
        delay = min(delay * factor, cap)


def parse_answer(body: bytes, number: str, zone: ZoneInfo, now: float) -> PullAnswer:
    """The server's answer for ``number`` (E.164). Raises PullError("bad-response") if it is garbage."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PullError("bad-response", f"not JSON: {str(exc)[:80]}") from exc
    entries = data if isinstance(data, list) else [data]
    if len(entries) > MAX_ENTRIES:
        raise PullError("bad-response", f"{len(entries)} entries, at most {MAX_ENTRIES}")
    fixes: list[AmlMessage] = []
    problems: list[str] = []
    no_data = 0
    for index, entry in enumerate(entries):
        try:
            message = _entry(entry, number, zone, now)
        except AmlError as exc:
            problems.append(f"entry {index}: {exc}")
            continue
        if message is None:
            no_data += 1
        elif message.position is not None:
            fixes.append(message)
    if not fixes and problems and not no_data:
        raise PullError("bad-response", "; ".join(problems[:3]))
    # Oldest first, the best last: it is stored last and so is the trail's newest (the card's and
    # the routing's fix). A server sends several fixes of one time (Wi-Fi and GNSS of the same
    # moment): then the most accurate is the best, and of equally accurate ones the first sent.
    order = {id(fix): index for index, fix in enumerate(fixes)}
    fixes.sort(key=lambda fix: (fix.fix_time if fix.fix_time is not None else now, -_radius(fix), -order[id(fix)]))
    return PullAnswer(tuple(fixes), tuple(problems))


def _radius(fix: AmlMessage) -> float:
    return fix.position.radius_m if fix.position is not None else math.inf


def _entry(entry: Any, number: str, zone: ZoneInfo, now: float) -> AmlMessage | None:
    """One entry as an AmlMessage; None for "no aml data"."""
    if not isinstance(entry, dict):
        raise AmlError("not an object")
    status = entry.get("status")
    if status is not None:
        if not isinstance(status, str):
            raise AmlError("status is not text")
        if status.strip().lower() == NO_DATA:
            return None
        if status.strip().lower() != "ok":
            raise AmlError(f"status {status[:40]!r}")
    fields = {key: text for key in HTTPS_FIELDS if (text := _text(key, entry.get(key))) is not None}
    for key in _TIME_FIELDS:
        if key in fields and _DATE_TIME.fullmatch(fields[key]):
            fields[key] = _unix_ms(fields[key], zone)
    raw_number = fields.get("device_number", "").strip()
    if raw_number.isdigit() and not raw_number.startswith("0"):
        fields["device_number"] = "+" + raw_number  # echoed in the "international" form, 4915...
    fields.setdefault("device_number", number)
    message = parse_https(fields)
    if message.number != number:
        raise AmlError("the entry is for another number than the one asked for")
    if message.fix_time is not None and message.fix_time > now + FUTURE_TOLERANCE_S:
        ahead = message.fix_time - now
        raise AmlError(f"location_time {ahead:.0f} s in the future (is aml_pull.time_zone right?)")
    return message


def _text(key: str, value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise AmlError(f"{key} is neither a number nor text")
    return value if isinstance(value, str) else repr(value)


def _unix_ms(text: str, zone: ZoneInfo) -> str:
    try:
        moment = datetime.fromisoformat(text.replace(" ", "T", 1))
    except ValueError as exc:
        raise AmlError(f"not a date and time: {text[:30]!r}") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return str(round(moment.timestamp() * 1000))


def ssl_context(settings: AmlPullSettings) -> ssl.SSLContext:
    """Verify the server against ca_file (or the system's CAs); present the client certificate."""
    try:
        context = ssl.create_default_context(cafile=str(settings.ca_file) if settings.ca_file else None)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if settings.client_cert is not None:
            secret = settings.client_key_password.get_secret_value()
            # a callable, so that OpenSSL never prompts on the terminal for a key password
            context.load_cert_chain(settings.client_cert, settings.client_key, password=lambda: secret)
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise PullSetupError(f"AML pull TLS set-up: {exc}") from exc
    return context


def _tls_failure(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return False
        if isinstance(seen, ssl.SSLError | aiohttp.ClientSSLError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _being_cancelled() -> bool:
    # aiohttp can turn a cancellation into a connection error; never retry on that
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class AmlPullClient:
    """Asks the central server for a number's AML; one connection pool, built once."""

    def __init__(self, settings: AmlPullSettings, user_agent: str = "verbund112") -> None:
        self.settings = settings
        self._ssl = ssl_context(settings)
        self._zone = ZoneInfo(settings.time_zone)
        self._user_agent = user_agent
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=self._ssl, limit=20),
            timeout=aiohttp.ClientTimeout(total=self.settings.request_timeout),
            headers={
                "Accept": "application/json",
                "User-Agent": self._user_agent,
                "Authorization": basic_auth(self.settings.username, self.settings.password.get_secret_value()),
            },
        )
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._session is not None:
            try:
                async with asyncio.timeout(2.0):
                    await self._session.close()
            except TimeoutError:
                pass
            self._session = None

    async def fetch(self, e164: str) -> PullAnswer:
        """The server's AML for a number. Raises PullError; never anything else but cancellation."""
        if self._session is None:
            raise RuntimeError("AmlPullClient used outside 'async with'")
        params = {"number": server_number(e164, self.settings.number_format)}
        try:
            async with asyncio.timeout(self.settings.request_timeout):
                async with self._session.get(self.settings.url, params=params, allow_redirects=False) as response:
                    status = response.status
                    body = await _read_capped(response) if status == 200 else b""
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            if _being_cancelled():
                raise asyncio.CancelledError from exc
            if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
                raise PullError("timeout", f"no answer within {self.settings.request_timeout} s") from exc
            if _tls_failure(exc):
                raise PullError("tls", f"TLS: {exc}") from exc
            if isinstance(exc, aiohttp.ServerDisconnectedError):
                # TLS 1.3: a server that refuses our client certificate hangs up only after the handshake
                raise PullError("unreachable", "server hung up (client certificate refused?)") from exc
            if isinstance(exc, aiohttp.ClientConnectionError | OSError):
                raise PullError("unreachable", str(exc) or type(exc).__name__) from exc
            if isinstance(exc, aiohttp.ClientResponseError):  # its text has the URL, the number in its query
                raise PullError("bad-response", f"HTTP {exc.status}: {exc.message}") from exc
            raise PullError("bad-response", str(exc) or type(exc).__name__) from exc
        if status in (204, 404):
            return PullAnswer(())
        if status in (401, 403):
            raise PullError("refused", f"HTTP {status}: client certificate or basic-auth user refused")
        if status != 200:
            raise PullError("http-error", f"HTTP {status}")
        return parse_answer(body, e164, self._zone, time.time())


async def _read_capped(response: aiohttp.ClientResponse) -> bytes:
    if (response.content_length or 0) > MAX_BODY_BYTES:
        raise PullError("bad-response", f"answer larger than {MAX_BODY_BYTES} bytes")
    body = bytearray()
    async for chunk in response.content.iter_chunked(65536):
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise PullError("bad-response", f"answer larger than {MAX_BODY_BYTES} bytes")
    return bytes(body)
