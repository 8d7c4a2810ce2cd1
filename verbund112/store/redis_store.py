"""The only code that talks to Redis.

Every command has a timeout; a Redis that does not answer raises StoreError
(the one error root of the store), and callers decide what that means (never a
failed call). Every value read is validated (verbund112.store.records): one
that does not parse is logged at WARNING without its content (it may hold a
number or a position), counted in ``verbund112_store_bad_values{what}`` and
skipped. No loop of the service ever dies of data.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import ssl
import stat
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar
from urllib.parse import urlsplit

import prometheus_client as prom
import redis.asyncio as aioredis
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector
from pydantic import BaseModel, ConfigDict, Field, SecretStr, StringConstraints, ValidationError, model_validator
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool

from overflow.state import SiteSnapshot, SnapshotError
from routing.decision import AmlFix
from verbund112.store import keys, retention
from verbund112.store.records import (
    AbandonedCall,
    AmlFixRecord,
    AnsweredMark,
    AuditEntry,
    CallRecord,
    EarlierCall,
    MoveRecord,
    Record,
)

log = logging.getLogger(__name__)

R = TypeVar("R", bound=Record)
_E164 = re.compile(r"^\+[1-9][0-9]{1,14}$")
_CALL_ID = re.compile(r"^[-0-9A-Za-z._]{1,80}$")


DEFAULT_URL = "redis://127.0.0.1:6379/0"


class RedisTlsSettings(BaseModel):
    """TLS to the Redis nodes and the sentinels (settings section `redis.tls`), for links across a WAN.

    Only paths: the key stays in its file (readable by its owner and group only). The
    files are checked when the store is built (``tls_file_problems``) and by check-config.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    ca_file: Path = Field(description="PEM: the CA that signed the Redis nodes' and sentinels' certificates")
    cert_file: Path | None = Field(default=None, description="PEM: this service's certificate (tls-auth-clients)")
    key_file: Path | None = Field(default=None, description="PEM: the key of cert_file, unencrypted, mode 0600/0640")
    # Sentinels name the master by IP address: the nodes' certificates carry it (subjectAltName).
    check_hostname: bool = Field(default=True, description="a certificate must name the address connected to")

    @model_validator(mode="after")
    def _certificate_with_key(self) -> RedisTlsSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("redis.tls: cert_file and key_file go together")
        return self


class StoreSetupError(ValueError):
    """The store cannot be built: a file redis.tls names is missing, unreadable, too open or wrong."""


def tls_file_problems(tls: RedisTlsSettings) -> list[tuple[str, str]]:
    """What is wrong with the files of redis.tls, as (setting, what); empty when TLS can be set up."""
    problems: list[tuple[str, str]] = []
    for setting, path in (("ca_file", tls.ca_file), ("cert_file", tls.cert_file), ("key_file", tls.key_file)):
        if path is None:
            continue
        try:
            with path.open("rb"):
                mode = stat.S_IMODE(path.stat().st_mode)
        except OSError as exc:
            problems.append((setting, f"{path}: {exc.strerror or exc}"))
            continue
        if setting == "key_file" and mode & 0o007:
            problems.append((setting, f"{path} is open to everyone (mode {mode:04o}): 0600 or 0640 it must be"))
    if problems:
        return problems
    context = ssl.create_default_context()
    try:
        context.load_verify_locations(cafile=tls.ca_file)
    except (ssl.SSLError, ValueError) as exc:
        problems.append(("ca_file", f"{tls.ca_file}: no PEM certificate in it ({exc})"))
    if tls.cert_file is not None:
        try:
            # a callable password: OpenSSL never prompts on the terminal for an encrypted key
            context.load_cert_chain(tls.cert_file, tls.key_file, password=lambda: "")
        except (ssl.SSLError, ValueError) as exc:
            problems.append(("cert_file", f"{tls.cert_file} with {tls.key_file}: not a PEM certificate and its "
                                          f"unencrypted key ({exc})"))  # fmt: skip
    return problems


class RedisSettings(BaseModel):
    """The shared store of both sites (settings section `redis`).

    Either through Redis Sentinel (``sentinels`` and ``master_name``: the store follows a
    failover by itself) or one plain Redis (``url``); not both. Neither: the plain Redis
    at DEFAULT_URL. With ``tls`` every connection (to the nodes and to the sentinels) is
    TLS; a plain Redis is then a ``rediss://`` URL.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str | None = Field(default=None, description="one plain Redis; not with sentinels")
    sentinels: list[Annotated[str, StringConstraints(pattern=r"^[^\s:]+:[0-9]{1,5}$")]] = Field(
        default_factory=list, description="host:port of each sentinel; not with url"
    )
    master_name: str = Field(default="verbund112", min_length=1, description="the name the sentinels monitor")
    password: SecretStr | None = Field(default=None, description="requirepass of the Redis nodes")
    sentinel_password: SecretStr | None = Field(default=None, description="requirepass of the sentinels")
    sentinel_timeout: float = Field(default=0.3, gt=0, description="per question to a sentinel, seconds")
    timeout: float = Field(default=0.5, gt=0, description="per Redis command, seconds")
    # A write that must survive a failover counts as done once this many replicas have it.
    # None: 1 through sentinels (the replica at the other site), 0 with a plain Redis.
    replica_acks: int | None = Field(default=None, ge=0, le=4)
    replica_ack_timeout: float = Field(default=0.25, gt=0, description="WAIT for the replicas, seconds")
    tls: RedisTlsSettings | None = Field(default=None, description="TLS to the nodes and the sentinels")
    heartbeat_interval: float = Field(default=0.5, gt=0)
    # A site that stops is seen as gone after at most heartbeat_ttl + heartbeat_interval (2 s).
    heartbeat_ttl: float = Field(default=1.5, gt=0, description="partner counts as unknown after this")
    # Every entry with a caller number or a position is gone this long after it was written, at the
    # latest, whatever is appended to its key later (verbund112/store/retention.py).
    personal_data_max_age_s: int = Field(
        default=keys.PERSONAL_DATA_TTL_S, ge=1, le=keys.PERSONAL_DATA_TTL_S,
        description="seconds a caller number or position may stay in Redis",
    )  # fmt: skip

    @model_validator(mode="after")
    def _one_way_to_redis(self) -> RedisSettings:
        if self.url is not None and self.sentinels:
            raise ValueError("redis: give either url (one plain Redis) or sentinels, not both")
        secure_url = self.url is not None and urlsplit(self.url).scheme == "rediss"
        if self.tls is not None and not self.through_sentinels and not secure_url:
            raise ValueError("redis.tls is set: the plain Redis is then a rediss:// url (or use sentinels)")
        if secure_url and self.tls is None:
            raise ValueError("redis.url is rediss://: set redis.tls.ca_file, the CA that signed the Redis certificate")
        if self.acks_needed and self.replica_ack_timeout >= self.timeout:
            raise ValueError("redis.replica_ack_timeout must be shorter than redis.timeout (the WAIT is a command)")
        return self

    @property
    def through_sentinels(self) -> bool:
        return bool(self.sentinels)

    @property
    def acks_needed(self) -> int:
        if self.replica_acks is not None:
            return self.replica_acks
        return 1 if self.through_sentinels else 0


class StoreError(Exception):
    """Redis did not answer in time or at all."""


class NotReplicated(StoreError):
    """Written on the master, but no replica acknowledged it within redis.replica_ack_timeout.

    The write is done (``result`` is what it returned); it would be lost if the master died
    now. Whoever must not lose it keeps it and writes it again (every such write is idempotent).
    """

    def __init__(self, result: Any) -> None:
        super().__init__("no replica acknowledged the write in time")
        self.result = result


def being_cancelled() -> bool:
    """True while the current task is being cancelled.

    redis-py can turn a cancellation that reaches it into TimeoutError or a
    ConnectionError; a loop that retries on those would then never stop.
    """
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


@dataclass(frozen=True, slots=True)
class AmlUpdated:
    """Announced: a number's AML trail has a new fix."""

    number: str


@dataclass(frozen=True, slots=True)
class AbandonedChanged:
    """Announced: the callback list changed."""

    call_id: str


@dataclass(frozen=True, slots=True)
class Resubscribed:
    """Announced after each (re)subscription: what was published meanwhile is lost, read the keys again."""


Announcement = AmlUpdated | AbandonedChanged | Resubscribed


class _WatchedSentinelPool(SentinelConnectionPool):
    """redis-py's Sentinel pool, telling the store which master each new connection goes to."""

    on_master: Callable[[str], None] | None = None

    async def get_master_address(self) -> Any:
        address = await super().get_master_address()  # type: ignore[no-untyped-call]
        if self.on_master is not None:
            self.on_master(f"{address[0]}:{address[1]}")
        return address


def _tls_options(tls: RedisTlsSettings | None) -> dict[str, Any]:
    """redis-py's TLS options of a connection (none without redis.tls)."""
    if tls is None:
        return {}
    return {
        "ssl_ca_certs": str(tls.ca_file), "ssl_certfile": tls.cert_file and str(tls.cert_file),
        "ssl_keyfile": tls.key_file and str(tls.key_file), "ssl_check_hostname": tls.check_hostname,
        "ssl_min_version": ssl.TLSVersion.TLSv1_2,
    }  # fmt: skip


def _connect(settings: RedisSettings) -> tuple[aioredis.Redis, Sentinel | None]:
    """A client of the master: through the sentinels (follows a failover), or of the one plain Redis."""
    password = None if settings.password is None else settings.password.get_secret_value()
    # No socket_timeout: every command is bounded by the store's own timeout (_guarded), and
    # redis-py's on top of it cost a task (wait_for, Python 3.11) per send and a timer per read.
    # A command cut off by ours leaves no half-read connection: redis-py drops it on the cancellation.
    timeouts: dict[str, Any] = {"socket_connect_timeout": settings.timeout}
    tls = _tls_options(settings.tls)
    if not settings.through_sentinels:  # rediss:// makes the connections TLS
        return aioredis.Redis.from_url(settings.url or DEFAULT_URL, password=password, **timeouts, **tls), None
    secure = {"ssl": True, **tls} if tls else {}
    sentinel_password = None if settings.sentinel_password is None else settings.sentinel_password.get_secret_value()
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        [(host, int(port)) for host, port in (address.rsplit(":", 1) for address in settings.sentinels)],
        sentinel_kwargs={"password": sentinel_password, "socket_timeout": settings.sentinel_timeout,
                         "socket_connect_timeout": settings.sentinel_timeout, **secure},
        password=password, **timeouts, **secure,
    )  # fmt: skip
    client = sentinel.master_for(settings.master_name, connection_pool_class=_WatchedSentinelPool)
    return client, sentinel


@dataclass(frozen=True, slots=True)
class CardData:
    """What a call card needs from the store, read in one round trip."""

    record: CallRecord | None
    aml_trail: list[AmlFixRecord]
    earlier_calls: list[EarlierCall]


@dataclass(frozen=True, slots=True)
class PartnerReport:
    """The partner's heartbeat as read: its snapshot, or why there is none."""

    snapshot: SiteSnapshot | None
    problem: str


class _DegradedSeconds(Collector):
    """Time without a reachable master, summed: a counter (it only grows), read when scraped."""

    def __init__(self, seconds: Callable[[], float]) -> None:
        self._seconds = seconds

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(
            "verbund112_redis_degraded_seconds", "seconds this service had no reachable Redis master, in all",
            value=self._seconds(),
        )  # fmt: skip


class Store:
    def __init__(self, settings: RedisSettings, registry: prom.CollectorRegistry) -> None:
        """Raises StoreSetupError when the TLS files of redis.tls cannot be used."""
        if settings.tls is not None and (problems := tls_file_problems(settings.tls)):
            raise StoreSetupError("; ".join(f"redis.tls.{setting}: {what}" for setting, what in problems))
        self.settings = settings
        self.within = settings.timeout
        self.max_age_s = settings.personal_data_max_age_s
        self.redis, self._sentinel = _connect(settings)
        self.reachable = False
        # the master as this service last saw it (a plain Redis: its address)
        self.master: str | None = None if settings.through_sentinels else _address_of(settings.url or DEFAULT_URL)
        self._degraded_since: float | None = None  # monotonic; None while a master answers
        self._degraded_before_s = 0.0  # earlier spells without a master, summed
        self._tls_refusal: str | None = None  # why the last TLS handshake failed, until one succeeds
        self.failovers_seen = 0
        if isinstance(self.redis.connection_pool, _WatchedSentinelPool):
            self.redis.connection_pool.on_master = self._master_seen
        self.bad_values = prom.Counter(
            "verbund112_store_bad_values", "values read from Redis that did not parse, skipped", ["what"],
            registry=registry,
        )  # fmt: skip
        self.call_records_kept = prom.Counter(
            "verbund112_call_records_not_overwritten", "call records not written: one existed for the call id (kept)",
            registry=registry,
        )  # fmt: skip
        self.failovers = prom.Counter(
            "verbund112_redis_failovers", "the Redis master changed, as seen by this service", registry=registry
        )
        self.unreplicated = prom.Counter(
            "verbund112_redis_writes_unreplicated", "writes no replica acknowledged in time (kept and written again)",
            ["what"], registry=registry,
        )  # fmt: skip
        self.tls_refused = prom.Counter(
            "verbund112_redis_tls_refused", "connections to Redis or a sentinel that failed in the TLS handshake",
            ["reason"], registry=registry,
        )  # fmt: skip
        self.master_info = prom.Info("verbund112_redis_master", "the Redis master this service writes to",
                                     registry=registry)  # fmt: skip
        self.master_info.info({"address": self.master or ""})
        prom.Gauge("verbund112_redis_up", "1 while Redis answers (0: degraded, no master reachable)",
                   registry=registry).set_function(lambda: 1.0 if self.reachable else 0.0)  # fmt: skip
        registry.register(_DegradedSeconds(self.degraded_s))

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self.within):
                await self.redis.aclose()
        if self._sentinel is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.within):
                    await self._sentinel.aclose()

    # -- the master ------------------------------------------------------------------

    def _master_seen(self, address: str) -> None:
        if address == self.master:
            return
        if self.master is not None:
            self.failovers_seen += 1
            self.failovers.inc()
            log.warning("Redis master is now %s (was %s)", address, self.master)
        else:
            log.info("Redis master is %s", address)
        self.master = address
        self.master_info.info({"address": address})

    def _mark_reachable(self, reachable: bool) -> None:
        if reachable == self.reachable:
            return
        now = time.monotonic()
        if reachable:
            log.info("Redis reachable")
            self._tls_refusal = None
            if self._degraded_since is not None:
                self._degraded_before_s += now - self._degraded_since
                self._degraded_since = None
        else:
            self._degraded_since = now
        self.reachable = reachable

    def degraded_s(self) -> float:
        """Seconds without a reachable master since the start (the current spell included)."""
        current = 0.0 if self._degraded_since is None else time.monotonic() - self._degraded_since
        return self._degraded_before_s + current

    def status(self) -> dict[str, Any]:
        """For /api/v1/status: degraded while no master answers (calls are routed all the same)."""
        return {
            "reachable": self.reachable,
            "degraded": not self.reachable,
            "mode": "sentinel" if self.settings.through_sentinels else "single",
            "master": self.master,
            "failovers": self.failovers_seen,
            "degraded_s": round(self.degraded_s(), 3),
        }

    # -- plumbing ---------------------------------------------------------------

    async def _guarded(self, coro: Any, within: float | None = None) -> Any:
        try:
            async with asyncio.timeout(within or self.within):
                result = await coro
        except (TimeoutError, OSError, aioredis.RedisError) as exc:
            if being_cancelled():
                raise asyncio.CancelledError from exc
            refusal = tls_refusal(exc)
            if refusal is not None:
                self._refused(*refusal)
            elif self.reachable:
                log.warning("Redis unreachable: %s (calls are not affected)", exc or type(exc).__name__)
            self._mark_reachable(False)
            raise StoreError(str(exc) or type(exc).__name__) from exc
        if being_cancelled():  # redis-py can also swallow a cancellation and answer as if nothing happened
            raise asyncio.CancelledError
        self._mark_reachable(True)
        return result

    def _refused(self, reason: str, detail: str) -> None:
        """A TLS handshake failed: counted each time, an ERROR line when the reason is new (not every heartbeat)."""
        self.tls_refused.labels(reason).inc()
        if reason != self._tls_refusal:
            log.error(
                "Redis refused: the TLS handshake failed (%s); check redis.tls: ca_file must be the CA that signed "
                "the certificates of the Redis nodes and sentinels, cert_file and key_file this service's, signed "
                "by the CA they trust. Calls are not affected, the store is degraded.", detail,
            )  # fmt: skip
        self._tls_refusal = reason

    async def _pipeline(self, fill: Any, transaction: bool = True, within: float | None = None) -> list[Any]:
        async with self.redis.pipeline(transaction=transaction) as pipe:
            fill(pipe)
            return list(await self._guarded(pipe.execute(), within))

    async def _replicated(self, what: str, fill: Any) -> list[Any]:
        """Writes, then WAIT for redis.replica_acks replicas, on one connection (WAIT counts that
        connection's writes). Raises NotReplicated when too few acknowledged in time."""
        acks = self.settings.acks_needed

        def writes_and_wait(pipe: Any) -> None:
            fill(pipe)
            if acks:
                pipe.wait(acks, int(self.settings.replica_ack_timeout * 1000))

        results = await self._pipeline(writes_and_wait, transaction=False)
        if acks and int(results.pop()) < acks:
            self.unreplicated.labels(what).inc()
            raise NotReplicated(results)
        return results

    def _bad(self, what: str, problem: str) -> None:
        self.bad_values.labels(what).inc()
        log.warning("Redis value skipped, it does not parse as %s: %s", what, problem)

    def _decode(self, what: str, raw: Any, model: type[R]) -> R | None:
        """A record from a stored value; None (logged, counted) if it does not parse."""
        if raw is None:
            return None
        try:
            return model.model_validate_json(raw)
        except ValidationError as exc:
            # the types and places of the errors only: the input may be personal data
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['type']}" for e in exc.errors()[:5])
            self._bad(what, problems)
        except (ValueError, TypeError) as exc:  # not UTF-8, not bytes
            self._bad(what, type(exc).__name__)
        return None

    def _decode_all(self, what: str, raws: Sequence[Any], model: type[R]) -> list[R]:
        return [record for raw in raws if (record := self._decode(what, raw, model)) is not None]

    def _text(self, what: str, raw: Any, pattern: re.Pattern[str]) -> str | None:
        try:
            text = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
        except UnicodeDecodeError:
            self._bad(what, "not UTF-8")
            return None
        if not pattern.match(text):
            self._bad(what, "malformed")
            return None
        return text

    # -- AML -------------------------------------------------------------------

    async def latest_aml_fix(self, e164: str, within: float | None = None) -> AmlFix | None:
        raw = await self._guarded(self.redis.lindex(keys.aml(e164), 0), within)
        record = self._decode("aml-fix", raw, AmlFixRecord)
        return None if record is None else record.to_fix()

    async def add_aml_fix(self, e164: str, record: AmlFixRecord, ttl_s: int) -> None:
        """Prepend a fix to the number's trail and tell the other services.

        Each fix is gone ``ttl_s`` (at most the personal-data maximum) after it was received:
        older fixes are dropped and the trail expires with its oldest fix, never later.
        Idempotent: the same fix written again (after a failover) is not added twice.
        Raises NotReplicated when the fix is on the master only.
        """
        max_age = min(ttl_s, self.max_age_s)
        # the number only on the channel: subscribers read the store
        await self._replicated("aml-fix", lambda pipe: pipe.eval(
            retention.ADD_TO_TRAIL, 1, keys.aml(e164),
            record.to_json(), max_age, keys.AML_TRAIL_KEEP, keys.AML_UPDATES_CHANNEL, e164,
        ))  # fmt: skip

    async def claim_aml_nonce(self, nonce: str, ttl_s: int) -> bool:
        """True the first time a signed AML delivery's nonce is seen within ttl_s (a replay gets False)."""
        return bool(await self._guarded(self.redis.set(keys.aml_nonce(nonce), b"1", nx=True, ex=ttl_s)))

    async def aml_trail(self, e164: str) -> list[AmlFixRecord]:
        raw = await self._guarded(self.redis.lrange(keys.aml(e164), 0, keys.AML_TRAIL_KEEP - 1))
        return self._decode_all("aml-fix", raw, AmlFixRecord)

    # -- calls -------------------------------------------------------------------

    async def save_call(self, record: CallRecord) -> bool:
        """The entry site's record of a call, and the call in its number's index; create-only.

        A record that exists is never overwritten (nor its number's index touched): whatever
        asks second for the same call id, the dispatcher sees what the first request knew.
        False (logged, counted) when another record was there already; the same record
        written again (after a failover) counts as created. Raises NotReplicated when the
        record is on the master only.
        """
        index = keys.calls_by_number(record.caller) if _E164.match(record.caller) else None
        (created,) = await self._replicated("call", lambda pipe: pipe.eval(
            retention.CREATE_CALL, 2 if index else 1, keys.call(record.call_id), *([index] if index else []),
            record.to_json(), record.call_id, record.routed_at, self.max_age_s, keys.CALLS_PER_NUMBER_KEPT,
        ))  # fmt: skip
        if not created:
            self.call_records_kept.inc()
            log.warning("call record for %s exists already: the first one is kept", record.call_id)
        return bool(created)

    async def load_call(self, call_id: str) -> CallRecord | None:
        return self._decode("call", await self._guarded(self.redis.get(keys.call(call_id))), CallRecord)

    async def answered_card_data(
        self, call_id: str, mark: AnsweredMark, number: str | None, *, need_record: bool, since: float, most: int
    ) -> CardData:
        """Mark a call answered and read what its card needs, in one round trip."""

        def fill(pipe: Any) -> None:
            pipe.set(keys.answered(call_id), mark.to_json(), ex=self.max_age_s)
            if need_record:
                pipe.get(keys.call(call_id))
            if number is not None:
                pipe.lrange(keys.aml(number), 0, keys.AML_TRAIL_KEEP - 1)
                pipe.zrevrangebyscore(keys.calls_by_number(number), "+inf", since, start=0, num=most, withscores=True)

        results = (await self._pipeline(fill, transaction=False))[1:]  # [0]: the SET
        record = self._decode("call", results.pop(0), CallRecord) if need_record else None
        trail: list[AmlFixRecord] = []
        earlier: list[EarlierCall] = []
        if number is not None:
            trail = self._decode_all("aml-fix", results[0], AmlFixRecord)
            earlier = self._earlier(results[1])
        return CardData(record, trail, earlier)

    async def aml_and_earlier(
        self, number: str, since: float, most: int
    ) -> tuple[list[AmlFixRecord], list[EarlierCall]]:
        def fill(pipe: Any) -> None:
            pipe.lrange(keys.aml(number), 0, keys.AML_TRAIL_KEEP - 1)
            pipe.zrevrangebyscore(keys.calls_by_number(number), "+inf", since, start=0, num=most, withscores=True)

        trail, earlier = await self._pipeline(fill, False)
        return self._decode_all("aml-fix", trail, AmlFixRecord), self._earlier(earlier)

    def _earlier(self, raw: Any) -> list[EarlierCall]:
        calls = []
        for member, score in raw or ():
            call_id = self._text("calls-by-number", member, _CALL_ID)
            if call_id is not None:
                try:
                    calls.append(EarlierCall(call_id=call_id, at=score))
                except ValidationError:
                    self._bad("calls-by-number", "score")
        return calls

    # -- the callback list ---------------------------------------------------------

    async def add_abandoned_once(self, entry: AbandonedCall) -> str:
        """Put an abandoned call on the callback list, once per call id, unless a dispatcher answered it.

        Idempotent: the same call reported again (its UserEvent, then its AstDB outbox entry
        after an AMI reconnect) is not listed twice, nor again after its callback was done.
        An index (sorted by time) plus one key per call, each gone the personal-data maximum
        after the call ended. Returns "added", "seen", "answered" or "expired".
        Raises NotReplicated (with the outcome) when the entry is on the master only.
        """
        try:
            (result,) = await self._replicated("abandoned", lambda pipe: pipe.eval(
                retention.ADD_ABANDONED_ONCE, 4,
                keys.abandoned_seen(entry.call_id), keys.answered(entry.call_id), keys.abandoned_entry(entry.call_id),
                keys.ABANDONED_KEY,
                entry.call_id, entry.to_json(), entry.at, self.max_age_s, keys.ABANDONED_SEEN_S,
                keys.ABANDONED_CHANNEL,
            ))  # fmt: skip
        except NotReplicated as exc:
            exc.result = _outcome(exc.result[0])
            raise
        return _outcome(result)

    async def abandoned_calls(self) -> list[AbandonedCall]:
        raw_ids = await self._guarded(
            self.redis.zrevrangebyscore(keys.ABANDONED_KEY, "+inf", time.time() - self.max_age_s)
        )
        ids = [i for raw in raw_ids if (i := self._text("abandoned", raw, _CALL_ID)) is not None]
        if not ids:
            return []
        raw = await self._guarded(self.redis.mget([keys.abandoned_entry(i) for i in ids]))
        return self._decode_all("abandoned", raw, AbandonedCall)

    async def callback_done(self, call_id: str) -> bool:
        def fill(pipe: Any) -> None:
            pipe.zrem(keys.ABANDONED_KEY, call_id)
            pipe.delete(keys.abandoned_entry(call_id))
            pipe.publish(keys.ABANDONED_CHANNEL, call_id)

        removed, _, _ = await self._pipeline(fill)
        return bool(removed)

    # -- overflow moves ------------------------------------------------------------

    async def record_move(self, entry: MoveRecord) -> None:
        """One overflow move and its outcome, for the supervisor view (kept one hour).

        Idempotent (the same move is one member of the set). Raises NotReplicated when the
        move is on the master only.
        """
        await self._replicated("overflow-move", lambda pipe: pipe.eval(
            retention.ADD_SCORED, 1, keys.MOVES_KEY,
            json.dumps(entry.as_dict(), sort_keys=True), entry.at, keys.MOVES_KEEP_S, 0,
        ))  # fmt: skip

    async def recent_moves(self, since: float) -> list[MoveRecord]:
        raw = await self._guarded(self.redis.zrangebyscore(keys.MOVES_KEY, since, "+inf"))
        return self._decode_all("overflow-move", raw, MoveRecord)

    # -- rules audit ---------------------------------------------------------------

    async def append_audit(self, entry: AuditEntry) -> None:
        def fill(pipe: Any) -> None:
            pipe.lpush(keys.AUDIT_KEY, entry.to_json())
            pipe.ltrim(keys.AUDIT_KEY, 0, keys.AUDIT_KEEP - 1)

        await self._pipeline(fill)

    async def read_audit(self, count: int = 100) -> list[AuditEntry]:
        raw = await self._guarded(self.redis.lrange(keys.AUDIT_KEY, 0, count - 1))
        return self._decode_all("rules-audit", raw, AuditEntry)

    # -- heartbeats ----------------------------------------------------------------

    async def exchange_heartbeat(self, own: SiteSnapshot, partner: str, now: float) -> PartnerReport:
        """Write this site's snapshot, read the partner's (stale or malformed: no snapshot)."""
        ttl_ms = int(self.settings.heartbeat_ttl * 1000)

        def fill(pipe: Any) -> None:
            pipe.set(keys.heartbeat(own.site), json.dumps(own.to_json()), px=ttl_ms)
            pipe.get(keys.heartbeat(partner))

        _, raw = await self._pipeline(fill, transaction=False)
        if raw is None:
            return PartnerReport(None, "not reporting")
        try:
            data = json.loads(raw)
        except ValueError as exc:  # not UTF-8 (UnicodeDecodeError is a ValueError) or not JSON
            self._bad("heartbeat", type(exc).__name__)
            return PartnerReport(None, "unreadable heartbeat")
        try:
            return PartnerReport(SiteSnapshot.from_json(data, now, self.settings.heartbeat_ttl), "")
        except SnapshotError as exc:
            if "malformed" in str(exc):
                self._bad("heartbeat", "malformed snapshot")
                return PartnerReport(None, "malformed heartbeat")
            return PartnerReport(None, str(exc))

    async def delete_heartbeat(self, site: str) -> None:
        await self._guarded(self.redis.delete(keys.heartbeat(site)))

    # -- announcements -------------------------------------------------------------

    async def announcements(self) -> AsyncIterator[Announcement]:
        """The Verbund's announcements, for ever: resubscribes after a lost connection (through the
        sentinels: on the master of now), then announces Resubscribed (what was published while
        no subscription stood is gone; the keys hold it)."""
        delay = 0.2
        while True:
            pubsub = self.redis.pubsub()
            try:
                async with asyncio.timeout(self.within):
                    await pubsub.subscribe(keys.AML_UPDATES_CHANNEL, keys.ABANDONED_CHANNEL)
                delay = 0.2
                yield Resubscribed()
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if being_cancelled():  # redis-py may swallow the cancellation and return None
                        raise asyncio.CancelledError
                    if message is not None and (announcement := self._announcement(message)) is not None:
                        yield announcement
            except (OSError, aioredis.RedisError, TimeoutError) as exc:
                if being_cancelled():
                    raise asyncio.CancelledError from exc
                log.warning("Redis announcements lost (%s); listening again in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)  # a failover takes a few seconds: not much longer
            finally:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(1.0):
                        await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _announcement(self, message: dict[str, Any]) -> Announcement | None:
        channel = message.get("channel")
        data = message.get("data")
        if channel == keys.AML_UPDATES_CHANNEL.encode():
            number = self._text("aml-update", data, _E164)
            return None if number is None else AmlUpdated(number)
        if channel == keys.ABANDONED_CHANNEL.encode():
            call_id = self._text("abandoned-update", data, _CALL_ID)
            return None if call_id is None else AbandonedChanged(call_id)
        return None


_SSL_ERROR = re.compile(r"\[SSL: ([A-Z0-9_]+)\][^'\"]*")


def tls_refusal(exc: BaseException) -> tuple[str, str] | None:
    """Why a TLS handshake failed: OpenSSL's reason (e.g. CERTIFICATE_VERIFY_FAILED) and its text;
    None if the failure was not TLS.

    redis-py keeps the SSLError only as text in its ConnectionError, and through the sentinels
    as text in MasterNotFoundError, under our timeout's TimeoutError: the chain's texts are read.
    """
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            break
        if isinstance(seen, ssl.SSLError) and seen.reason:
            return str(seen.reason), str(seen)
        if found := _SSL_ERROR.search(str(seen)):
            return found.group(1), found.group(0).rstrip(". ")
        seen = seen.__cause__ or seen.__context__
    return None


def _outcome(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def _address_of(url: str) -> str:
    parsed = urlsplit(url)
    return f"{parsed.hostname}:{parsed.port or 6379}"
