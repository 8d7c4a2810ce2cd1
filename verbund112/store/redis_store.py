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
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import prometheus_client as prom
import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict, Field, ValidationError

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


class RedisSettings(BaseModel):
    """The shared store of both sites (settings section `redis`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str = "redis://127.0.0.1:6379/0"
    timeout: float = Field(default=0.5, gt=0, description="per Redis command, seconds")
    heartbeat_interval: float = Field(default=0.5, gt=0)
    # A site that stops is seen as gone after at most heartbeat_ttl + heartbeat_interval (2 s).
    heartbeat_ttl: float = Field(default=1.5, gt=0, description="partner counts as unknown after this")
    # Every entry with a caller number or a position is gone this long after it was written, at the
    # latest, whatever is appended to its key later (verbund112/store/retention.py).
    personal_data_max_age_s: int = Field(
        default=keys.PERSONAL_DATA_TTL_S, ge=1, le=keys.PERSONAL_DATA_TTL_S,
        description="seconds a caller number or position may stay in Redis",
    )  # fmt: skip


class StoreError(Exception):
    """Redis did not answer in time or at all."""


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


Announcement = AmlUpdated | AbandonedChanged


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


class Store:
    def __init__(self, settings: RedisSettings, registry: prom.CollectorRegistry) -> None:
        self.settings = settings
        self.within = settings.timeout
        self.max_age_s = settings.personal_data_max_age_s
        self.redis = aioredis.Redis.from_url(
            settings.url, socket_timeout=settings.timeout, socket_connect_timeout=settings.timeout
        )
        self.reachable = False
        self.bad_values = prom.Counter(
            "verbund112_store_bad_values", "values read from Redis that did not parse, skipped", ["what"],
            registry=registry,
        )  # fmt: skip
        self.call_records_kept = prom.Counter(
            "verbund112_call_records_not_overwritten", "call records not written: one existed for the call id (kept)",
            registry=registry,
        )  # fmt: skip
        self._create_call = self.redis.register_script(retention.CREATE_CALL)
        prom.Gauge("verbund112_redis_up", "1 while Redis answers", registry=registry).set_function(
            lambda: 1.0 if self.reachable else 0.0
        )

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self.within):
                await self.redis.aclose()

    # -- plumbing ---------------------------------------------------------------

    async def _guarded(self, coro: Any, within: float | None = None) -> Any:
        try:
            async with asyncio.timeout(within or self.within):
                result = await coro
        except (TimeoutError, OSError, aioredis.RedisError) as exc:
            if being_cancelled():
                raise asyncio.CancelledError from exc
            if self.reachable:
                log.warning("Redis unreachable: %s (calls are not affected)", exc or type(exc).__name__)
            self.reachable = False
            raise StoreError(str(exc) or type(exc).__name__) from exc
        if being_cancelled():  # redis-py can also swallow a cancellation and answer as if nothing happened
            raise asyncio.CancelledError
        if not self.reachable:
            log.info("Redis reachable")
        self.reachable = True
        return result

    async def _pipeline(self, fill: Any, transaction: bool = True, within: float | None = None) -> list[Any]:
        async with self.redis.pipeline(transaction=transaction) as pipe:
            fill(pipe)
            return list(await self._guarded(pipe.execute(), within))

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
        """
        max_age = min(ttl_s, self.max_age_s)
        # the number only on the channel: subscribers read the store
        await self._guarded(self.redis.eval(
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
        False (logged, counted) when the record was there already.
        """
        index = keys.calls_by_number(record.caller) if _E164.match(record.caller) else None
        created = await self._guarded(
            self._create_call(
                keys=[keys.call(record.call_id), *([index] if index else [])],
                args=[record.to_json(), record.call_id, record.routed_at, self.max_age_s, keys.CALLS_PER_NUMBER_KEPT],
            )
        )  # fmt: skip
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
        """
        result = await self._guarded(self.redis.eval(
            retention.ADD_ABANDONED_ONCE, 4,
            keys.abandoned_seen(entry.call_id), keys.answered(entry.call_id), keys.abandoned_entry(entry.call_id),
            keys.ABANDONED_KEY,
            entry.call_id, entry.to_json(), entry.at, self.max_age_s, keys.ABANDONED_SEEN_S, keys.ABANDONED_CHANNEL,
        ))  # fmt: skip
        return result.decode() if isinstance(result, bytes) else str(result)

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
        """One overflow move and its outcome, for the supervisor view (kept one hour)."""

        await self._guarded(self.redis.eval(
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
        """The Verbund's announcements, for ever: resubscribes after a lost connection."""
        delay = 0.2
        while True:
            pubsub = self.redis.pubsub()
            try:
                async with asyncio.timeout(self.within):
                    await pubsub.subscribe(keys.AML_UPDATES_CHANNEL, keys.ABANDONED_CHANNEL)
                delay = 0.2
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
                delay = min(delay * 2, 5.0)
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
