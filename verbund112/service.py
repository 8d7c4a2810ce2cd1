"""The verbund112 service of one site: the composition root.

It wires the edges (AMI, FastAGI, Redis, HTTP) to the pure policies and owns
every long-lived task in one TaskGroup. If any of it fails, Asterisk's own
dialplan still routes every 112 call (see asterisk-config/templates/extensions.conf.j2).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any

import prometheus_client as prom
import redis.asyncio as aioredis
import structlog
from aiohttp import web

from aml.parse import AmlMessage
from aml.pull import AmlPullClient, PullSetupError
from routing.decision import AmlFix, CallFacts, Decision, Route, SiteStates, decide
from routing.location import LocationError, Position, parse_access_network_info, parse_location_info
from routing.numbers import NumberError, to_e164
from routing.rules import RulesError
from telephony import events
from telephony.ami import AmiClient, AmiError
from telephony.fastagi import AgiReply, AgiSession, FastAgiServer
from verbund112 import stores
from verbund112.aml_polls import AmlPolls, PullMetrics
from verbund112.calls import CallTracker
from verbund112.overflow_mover import OverflowMover
from verbund112.rules_holder import RulesChange, RulesHolder
from verbund112.settings import Settings

log = logging.getLogger(__name__)

FALLBACK_REPLY = AgiReply((("V112_ROUTE", Route.LOCAL.value),))


@dataclass(frozen=True, slots=True)
class CallRouted:
    """The service answered Asterisk's routing question for a call."""

    site: str
    call_id: str
    uniqueid: str
    caller_number: str
    position: Position | None  # the PIDF-LO position of the INVITE, if any
    location_problem: str
    decision: Decision


ServiceEvent = events.SiteEvent | CallRouted


class EventHub:
    """Fans service events out to subscribers without ever blocking the producer."""

    def __init__(self) -> None:
        self._subscribers: set[asyncio.Queue[ServiceEvent]] = set()
        self.dropped = 0

    def publish(self, event: ServiceEvent) -> None:
        for queue in self._subscribers:
            if queue.full():
                # A slow subscriber loses its oldest event, never the AMI reader's time.
                queue.get_nowait()
                self.dropped += 1
            queue.put_nowait(event)

    @contextlib.contextmanager
    def subscribe(self, maxsize: int = 10000) -> Iterator[asyncio.Queue[ServiceEvent]]:
        queue: asyncio.Queue[ServiceEvent] = asyncio.Queue(maxsize)
        self._subscribers.add(queue)
        try:
            yield queue
        finally:
            self._subscribers.discard(queue)


class Metrics:
    def __init__(self) -> None:
        self.registry = prom.CollectorRegistry()
        self.agi_requests = prom.Counter(
            "verbund112_fastagi_requests", "FastAGI requests by outcome", ["outcome"], registry=self.registry
        )
        self.agi_seconds = prom.Histogram(
            "verbund112_fastagi_seconds",
            "FastAGI exchange duration",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=self.registry,
        )
        self.ami_connected = prom.Gauge("verbund112_ami_connected", "1 while logged in to AMI", registry=self.registry)
        self.ami_events = prom.Counter(
            "verbund112_ami_call_events", "typed AMI events", ["kind"], registry=self.registry
        )
        self.aml_messages = prom.Counter(
            "verbund112_aml_messages",
            "AML messages by format and outcome",
            ["format", "outcome"],
            registry=self.registry,
        )
        self.redis_up = prom.Gauge("verbund112_redis_up", "1 while Redis answers", registry=self.registry)
        self.aml_pull = PullMetrics(self.registry)


class Service:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.hub = EventHub()
        self.metrics = Metrics()
        self.ami = AmiClient(
            settings.ami, settings.site, on_event=self._on_ami_event, on_connected=self._on_ami_connected
        )
        self.fastagi = FastAgiServer(
            self._route,
            fallback=FALLBACK_REPLY,
            host=settings.fastagi.host,
            port=settings.fastagi.port,
            deadline=settings.fastagi.deadline,
            max_header_bytes=settings.fastagi.max_header_bytes,
            on_done=self._on_agi_done,
        )
        self.redis = aioredis.Redis.from_url(
            settings.redis.url,
            socket_timeout=settings.redis.timeout,
            socket_connect_timeout=settings.redis.timeout,
        )
        self.redis_ok = False
        self.rules = RulesHolder(settings.rules_file)
        self.rules.load_initial()
        self.partner_alive = False
        self._side_tasks: set[asyncio.Task[None]] = set()
        self.calls = CallTracker(self)
        self.overflow = OverflowMover(self)
        self.aml_polls = AmlPolls(
            settings.aml_pull, self.metrics.aml_pull, latest=self._latest_aml_fix, store=self._store_pulled_fix
        )
        self.aml_pull_problem = "" if settings.aml_pull.enabled else "disabled"
        self.aml_pull_settled = asyncio.Event()  # set once the pull is on, or off (aml_pull_problem says why)
        self.partner_reporting = asyncio.Event()  # set while partner_alive, for whoever must wait for it
        self.partner_gone = asyncio.Event()  # the opposite, set from the first report on
        self._call_records: asyncio.Queue[tuple[str, dict[str, object]]] = asyncio.Queue(maxsize=10000)
        self.metrics.ami_connected.set_function(lambda: 1.0 if self.ami.connected.is_set() else 0.0)
        self.metrics.redis_up.set_function(lambda: 1.0 if self.redis_ok else 0.0)
        self.web_port = settings.web.port
        self.started = asyncio.Event()
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    def reload_on_signal(self) -> None:
        """SIGHUP: re-read the rules file (refused if invalid; the old rules stay)."""
        self.spawn(self._reload_quietly("SIGHUP"))

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """A short side task (a Redis write, say), awaited when the service stops."""
        task = asyncio.get_running_loop().create_task(work)
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    async def _reload_quietly(self, who: str) -> None:
        with contextlib.suppress(RulesError):  # logged and audited by reload_rules
            await self.reload_rules(who)

    async def run(self) -> None:
        from web.app import make_app  # the web layer depends on the service, not the other way round

        await self.fastagi.start()
        app = make_app(self)

        async def close_sockets(_: web.Application) -> None:
            await self.calls.pops.close_all()

        app.on_shutdown.append(close_sockets)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=5.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.settings.web.host, self.settings.web.port)
            await site.start()
            self.web_port = runner.addresses[0][1]
            async with asyncio.TaskGroup() as tasks:
                owned = [
                    tasks.create_task(self.ami.run(), name="ami"),
                    tasks.create_task(self._heartbeat(), name="heartbeat"),
                    tasks.create_task(self._write_call_records(), name="call-records"),
                    tasks.create_task(self.calls.run(), name="screen-pops"),
                    tasks.create_task(self.overflow.run(), name="overflow"),
                    tasks.create_task(self._pull_aml(), name="aml-pull"),
                ]
                self.started.set()
                log.info(
                    "verbund112 %s serving: FastAGI %s, web %s", self.settings.site, self.fastagi.port, self.web_port
                )
                await self._stop.wait()
                log.info("verbund112 %s stopping", self.settings.site)
                await self.fastagi.stop()  # let calls in flight get their answer first
                for task in owned:
                    task.cancel()
        finally:
            await self.fastagi.stop()
            await runner.cleanup()
            if self._side_tasks:
                await asyncio.wait(set(self._side_tasks), timeout=5)
            # A stopping site is gone for its partner now, not when the heartbeat expires.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.settings.redis.timeout):
                    await self.redis.delete(stores.heartbeat_key(self.settings.site))
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.settings.redis.timeout):
                    await self.redis.aclose()
            log.info("verbund112 %s stopped", self.settings.site)

    # -- FastAGI --------------------------------------------------------------

    async def _route(self, session: AgiSession) -> AgiReply:
        request = session.request
        if request.script != "route":
            raise ValueError(f"unknown FastAGI script {request.script!r}")
        # one round trip for everything the dialplan filtered; the PIDF-LO text separately
        channel = await session.get_variables(
            ["V112_CALL_ID", "V112_CALLER", "V112_GEO_HEADER_LEN", "V112_GEO_METHOD", "V112_PANI"]
        )
        call_id = channel["V112_CALL_ID"] or request.uniqueid
        structlog.contextvars.bind_contextvars(call_id=call_id, site=self.settings.site)
        try:
            rules = self.rules.rules
            if rules is None:
                raise ValueError("no valid routing rules loaded")
            # the rules' budget for finding the location; past it the dialplan routes locally
            async with asyncio.timeout(rules.spec.decision_deadline_ms / 1000):
                facts, position, problem = await self._call_facts(session, call_id, channel)
            decision = decide(facts, rules, self._site_states())
            self.hub.publish(
                CallRouted(self.settings.site, call_id, request.uniqueid, facts.caller_number, position, problem,
                           decision)
            )  # fmt: skip
            log.info("call routed %s to %s: %s", decision.route.value, decision.centre, decision.reason)
            self._remember_call(call_id, facts, decision)
            # one SET per round trip: only what the dialplan acts on
            reply = [("V112_ROUTE", decision.route.value)]
            if decision.external_number:
                reply.append(("V112_TARGET_NUMBER", decision.external_number))
            return AgiReply(tuple(reply))
        finally:
            structlog.contextvars.unbind_contextvars("call_id", "site")

    async def _call_facts(
        self, session: AgiSession, call_id: str, channel: dict[str, str]
    ) -> tuple[CallFacts, Position | None, str]:
        """Everything known about the call's location, each source read defensively."""
        caller = channel["V112_CALLER"]
        position, problem = None, ""
        if channel["V112_GEO_HEADER_LEN"] not in ("", "0"):
            info = await session.get_variable("V112_GEO_LOCATION") or ""
            try:
                position = parse_location_info(info, channel["V112_GEO_METHOD"])
            except LocationError as exc:
                problem = str(exc)
                log.warning("PIDF-LO location of the call ignored: %s", problem)
        cell_id = None
        if pani := channel["V112_PANI"]:
            try:
                cell_id = parse_access_network_info(pani)
            except LocationError as exc:
                log.warning("P-Access-Network-Info of the call ignored: %s", exc)
        now = time.time()
        aml = None
        if position is None or self._aml_before_pidf():
            try:
                aml = await stores.latest_aml_fix(self.redis, to_e164(caller), self.settings.redis.timeout / 5)
            except NumberError:
                pass  # the decision notes the unusable number
            except stores.StoreError as exc:
                log.warning("AML store not read for this call: %s", exc)
        facts = CallFacts(self.settings.site, call_id, caller, position, problem, aml, cell_id, now)
        if position is not None:
            # Positions are personal data: DEBUG only.
            log.debug("caller position %.5f %.5f r=%.0f m", position.lat, position.lon, position.radius_m)
        return facts, position, problem

    def _aml_before_pidf(self) -> bool:
        """Whether an AML fix could matter although the INVITE carried a position."""
        rules = self.rules.rules
        if rules is None or "aml" not in rules.spec.source_priority:
            return False
        order = rules.spec.source_priority
        return "pidf" not in order or order.index("aml") < order.index("pidf")

    def _site_states(self) -> SiteStates:
        alive = {self.settings.site}
        if self.partner_alive:
            alive.add(self.settings.partner)
        return SiteStates(frozenset(alive))

    def _remember_call(self, call_id: str, facts: CallFacts, decision: Decision) -> None:
        """Queue the call's data for Redis, so the partner that takes the call knows it."""
        record: dict[str, object] = {
            "call_id": call_id,
            "routed_at": facts.now,
            "entry_site": facts.site,
            "caller": decision.caller_e164 or facts.caller_number,
            "routed_to": decision.centre,
            "route": decision.route.value,
            "reason": decision.reason,
            "certain": decision.certain,
            "flags": list(decision.flags),
            "location": None,
        }
        if decision.location is not None:
            used = decision.location
            record["location"] = {
                "source": used.source,
                "district": used.district,
                "ags": used.ags,
                "share": used.share,
                "position": None if used.position is None else {
                    "lat": used.position.lat, "lon": used.position.lon, "radius_m": used.position.radius_m,
                    "method": used.position.method,
                },
            }  # fmt: skip
        with contextlib.suppress(asyncio.QueueFull):
            self._call_records.put_nowait((call_id, record))

    async def _write_call_records(self) -> None:
        while True:
            call_id, record = await self._call_records.get()
            try:
                await stores.save_call(self.redis, call_id, record, self.settings.redis.timeout)
                caller = record.get("caller")
                if isinstance(caller, str) and caller.startswith("+"):
                    when = float(record["routed_at"])  # type: ignore[arg-type]
                    await stores.index_call(self.redis, caller, call_id, when, self.settings.redis.timeout)
            except stores.StoreError as exc:
                log.warning("call record not stored: %s", exc)

    async def reload_rules(self, who: str, text: str | None = None, dry_run: bool = False) -> RulesChange:
        """Reload from disk (text None) or replace with uploaded text; audited in Redis."""
        action = "reload" if text is None else ("dry-run" if dry_run else "upload")
        try:
            change = self.rules.reload() if text is None else self.rules.replace(text, dry_run)
        except Exception as exc:
            await self._audit({"who": who, "action": action, "result": "refused", "problems": str(exc)[:4000]})
            raise
        await self._audit(
            {"who": who, "action": action, "result": "applied" if change.applied else "validated",
             "old": change.old_digest, "new": change.new_digest, "changes": change.changes[:200]}
        )  # fmt: skip
        return change

    async def _audit(self, entry: dict[str, object]) -> None:
        try:
            await stores.append_audit(self.redis, {"site": self.settings.site, **entry}, self.settings.redis.timeout)
        except stores.StoreError as exc:
            log.error("rules audit entry not stored (%s): %s", exc, entry)

    def _on_agi_done(self, outcome: str, seconds: float) -> None:
        self.metrics.agi_requests.labels(outcome).inc()
        self.metrics.agi_seconds.observe(seconds)

    # -- AML pull ---------------------------------------------------------------

    async def _pull_aml(self) -> None:
        """Poll the central AML server for this site's live calls (if configured)."""
        if not self.settings.aml_pull.enabled:
            self.aml_pull_settled.set()
            return
        try:
            client = AmlPullClient(self.settings.aml_pull, user_agent=f"verbund112 {self.settings.site}")
        except PullSetupError as exc:
            # AML is supplemental: the calls are routed and popped without it
            self.aml_pull_problem = str(exc)
            self.aml_pull_settled.set()
            log.error("AML pull off: %s", exc)
            return
        with self.hub.subscribe() as queue:
            async with client, self.aml_polls.polling(client.fetch):
                log.info("AML pull from %s on", self.settings.aml_pull.url)
                self.aml_pull_settled.set()
                while True:
                    event = await queue.get()
                    if isinstance(event, CallRouted):
                        self.aml_polls.call_started(event.uniqueid, event.call_id, event.caller_number)
                    elif isinstance(event, events.ChannelHungUp):
                        self.aml_polls.call_ended(event.uniqueid)

    async def _latest_aml_fix(self, number: str) -> AmlFix | None:
        return await stores.latest_aml_fix(self.redis, number, self.settings.redis.timeout)

    async def _store_pulled_fix(self, number: str, message: AmlMessage) -> None:
        assert message.position is not None
        fix = AmlFix(message.position, message.fix_time or time.time())
        details = {"confidence": message.confidence, "format": "pull", "altitude_m": message.altitude_m}
        await stores.add_aml_fix(
            self.redis, number, fix, within=self.settings.redis.timeout, ttl_s=self.settings.aml.retention_s,
            details=details,
        )  # fmt: skip

    # -- AMI ------------------------------------------------------------------

    def _on_ami_event(self, event: events.SiteEvent) -> None:
        self.metrics.ami_events.labels(type(event).__name__).inc()
        self.overflow.on_event(event)
        self.hub.publish(event)

    async def _on_ami_connected(self, ami: AmiClient) -> None:
        # events may have been missed while disconnected: the queue is read afresh
        listed = await ami.queue_status(self.settings.queue)
        self.overflow.on_queue_status(listed)
        for item in listed:
            self.hub.publish(item)

    # -- Redis ----------------------------------------------------------------

    def _note_partner(self, raw: bytes | None) -> None:
        """The partner's heartbeat (None: missing, expired or Redis down), parsed once by the overflow."""
        self.overflow.note_partner(raw, self.settings.redis.heartbeat_ttl)
        partner = self.overflow.partner  # None when stale or malformed
        alive = partner is not None and partner.ami_connected
        if alive != self.partner_alive:
            log.info("partner %s is %s", self.settings.partner, "reporting" if alive else "NOT reporting")
        self.partner_alive = alive
        if alive:
            self.partner_reporting.set()
            self.partner_gone.clear()
        else:
            self.partner_reporting.clear()
            self.partner_gone.set()

    async def _heartbeat(self) -> None:
        """This site's liveness and queue in Redis; the partner reads it (stale = unknown)."""
        key = stores.heartbeat_key(self.settings.site)
        partner_key = stores.heartbeat_key(self.settings.partner)
        ttl_ms = int(self.settings.redis.heartbeat_ttl * 1000)
        while True:
            value = json.dumps(self.overflow.snapshot().to_json())
            try:
                async with asyncio.timeout(self.settings.redis.timeout):
                    pipe = self.redis.pipeline(transaction=False)
                    pipe.set(key, value, px=ttl_ms)
                    pipe.get(partner_key)
                    _, partner = await pipe.execute()
                self._note_partner(partner)
                if not self.redis_ok:
                    log.info("Redis reachable")
                self.redis_ok = True
            except (TimeoutError, OSError, aioredis.RedisError) as exc:
                if stores.being_cancelled():
                    raise asyncio.CancelledError from exc
                if self.redis_ok:
                    log.warning("Redis unreachable: %s (calls are not affected)", exc or type(exc).__name__)
                self.redis_ok = False
                self._note_partner(None)  # without Redis the partner is unknown, never "idle"
            await asyncio.sleep(self.settings.redis.heartbeat_interval)


@contextlib.asynccontextmanager
async def running(settings: Settings, start_timeout: float = 10.0) -> AsyncIterator[Service]:
    """A started service for tests and tools; stopped and awaited on exit."""
    service = Service(settings)
    task = asyncio.create_task(service.run(), name=f"verbund112-{settings.site}")
    try:
        async with asyncio.timeout(start_timeout):
            started = asyncio.create_task(service.started.wait())
            done, _ = await asyncio.wait({task, started}, return_when=asyncio.FIRST_COMPLETED)
            if task in done:
                started.cancel()
                task.result()  # raises what made run() fail
                raise RuntimeError("service stopped during start")
        yield service
    finally:
        service.stop()
        with contextlib.suppress(asyncio.CancelledError):
            async with asyncio.timeout(10):
                await task


__all__ = ["AmiError", "CallRouted", "EventHub", "Service", "running"]
