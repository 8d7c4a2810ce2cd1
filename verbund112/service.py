"""The verbund112 service of one site: the composition root. It builds and wires, nothing else.

The edges (AMI, FastAGI, the store, HTTP) and the features (routing, screen
pops, overflow, partner watch, AML pull, rules admin) are built here and given
what they need by constructor. Every long-lived loop runs in one TaskGroup
under the supervisor, which restarts a loop that dies of a bug. If any of it
fails, Asterisk's own dialplan still routes every 112 call (see
asterisk-config/templates/extensions.conf.j2).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import prometheus_client as prom
from aiohttp import web
from systemd_watchdog import WatchDog

from overflow.state import SiteSnapshot
from routing.decision import Places
from routing.rules import Rules
from telephony import dialplan, events
from telephony.ami import AmiClient, AmiError
from telephony.fastagi import FastAgiServer, PeerPolicy
from verbund112 import __version__
from verbund112.features.abandoned_calls import AbandonedCalls
from verbund112.features.aml_polls import AmlPull
from verbund112.features.aml_sink import AmlSink
from verbund112.features.answer_times import AnswerTimes
from verbund112.features.circling_callers import CirclingCallers
from verbund112.features.hub import CallRouted, EventHub
from verbund112.features.overflow_mover import OverflowMover
from verbund112.features.partner_watch import PartnerWatch
from verbund112.features.routing_service import FALLBACK_REPLY, RoutingMetrics, RoutingService
from verbund112.features.rules_admin import RulesAdmin
from verbund112.features.rules_agreement import RulesAgreement
from verbund112.features.screen_pops import ScreenPops
from verbund112.features.supervise import Outbox, Supervisor
from verbund112.features.supervisor_view import SupervisorView
from verbund112.rules_holder import RulesHolder
from verbund112.service_manager import ServiceManager
from verbund112.settings import Settings
from verbund112.store import Store
from web.app import serve as serve_web
from web.auth import SIGNATURE_REFUSALS
from web.notifier import DispatcherScreens
from web.ports import Health, WebPorts

log = logging.getLogger(__name__)

DRAIN_S = 5.0  # at stop: writes still queued get this long to reach the store


class Service:
    def __init__(self, settings: Settings, watchdog: WatchDog | None = None) -> None:
        """watchdog: the sender to the service manager (systemd, the lab's supervisor); None: no manager."""
        self.settings = settings
        site, partner = settings.site, settings.partner
        # first, so that a service that cannot tell its Asterisk from anyone else never starts
        fastagi_peers = PeerPolicy.from_settings(settings.fastagi, asterisk_host=settings.ami.host)
        self.registry = registry = prom.CollectorRegistry()
        self.hub = EventHub()
        self.supervisor = Supervisor(registry)
        self.manager = ServiceManager(watchdog, registry)
        self.store = Store(settings.redis, registry)
        holder = RulesHolder(settings.rules_file)
        holder.load_initial()
        self.rules = RulesAdmin(site=site, holder=holder, store=self.store)
        self.ami = AmiClient(settings.ami, site, on_event=self._on_ami_event, on_connected=self._on_ami_connected)
        dropped = prom.Counter("verbund112_outbox_dropped", "writes refused by a full outbox", ["outbox"],
                               registry=registry)  # fmt: skip
        self.call_records = Outbox("call record", self.store.save_call, dropped)
        self.move_records = Outbox("overflow move", self.store.record_move, dropped)
        self.aml_sink = AmlSink(self.store, dropped)
        self.abandoned = AbandonedCalls(store=self.store, dropped=dropped, registry=registry)
        unconfirmed = prom.Gauge("verbund112_outbox_unconfirmed", "writes on the master only, repeated until a "
                                 "replica has them", ["outbox"], registry=registry)  # fmt: skip
        for outbox in self._outboxes():
            unconfirmed.labels(outbox.name).set_function(functools.partial(lambda box: box.unconfirmed, outbox))
        self.circling = CirclingCallers(settings.circling, registry)
        self.overflow = OverflowMover(
            site=site, partner=partner, queue=settings.queue, control=self.ami, rules=self._rules,
            outbox=self.move_records, registry=registry, interval=settings.redis.heartbeat_interval,
        )  # fmt: skip
        self.partner = PartnerWatch(
            site=site, partner=partner, store=self.store, own_snapshot=self._own_snapshot,
            on_report=self.overflow.on_partner, interval=settings.redis.heartbeat_interval, registry=registry,
        )  # fmt: skip
        self.rules_agreement = RulesAgreement(
            site=site, partner=partner, own_digest=self._rules_digest, partner_snapshot=lambda: self.partner.snapshot,
            registry=registry,
        )  # fmt: skip
        self.routing_metrics = RoutingMetrics(registry)
        self.answer_times = AnswerTimes(registry)
        self.routing = RoutingService(
            site=site, partner=partner, rules=self._rules, partner_alive=lambda: self.partner.alive,
            latest_aml_fix=self.store.latest_aml_fix, aml_read_within=settings.redis.timeout / 5,
            announce=self._routed, remember=self.call_records.put,
        )  # fmt: skip
        self.fastagi = FastAgiServer(
            self.routing.route,
            fallback=FALLBACK_REPLY,
            host=settings.fastagi.host,
            port=settings.fastagi.port,
            deadline=settings.fastagi.deadline,
            peers=fastagi_peers,
            max_header_bytes=settings.fastagi.max_header_bytes,
            on_done=self.routing_metrics.exchange_done,
            on_refused=self.routing_metrics.peer_refused,
            prefetch=dialplan.ROUTE_REQUEST_VARIABLES,
        )
        self.screens = DispatcherScreens(site, registry, max_per_dispatcher=settings.web.max_screens_per_dispatcher,
                                         auth_timeout=settings.web.screen_auth_timeout_s)  # fmt: skip
        self.pops = ScreenPops(site=site, partner=settings.partner, store=self.store, screens=self.screens,
                               hub=self.hub, places=self._places, registry=registry)  # fmt: skip
        self.aml_pull = AmlPull(site=site, settings=settings.aml_pull, store=self.store,
                                retention_s=settings.aml.retention_s, hub=self.hub, registry=registry)  # fmt: skip
        self.supervision = SupervisorView(mover=self.overflow, watch=self.partner, store=self.store,
                                          own_snapshot=self._own_snapshot, rules=self.rules_agreement.status,
                                          circling_alarm_after_s=settings.circling.alarm_after_s)  # fmt: skip
        prom.Info("verbund112_build", "the running verbund112", registry=registry).info({"version": __version__})
        # the process's CPU, memory, open files and start time (process_*), and Python's version (python_info)
        prom.ProcessCollector(registry=registry)
        prom.PlatformCollector(registry=registry)
        self.answered_calls_read = prom.Counter(
            "verbund112_answered_calls_read", "calls held by a dispatcher, read after an AMI connect", registry=registry
        )
        self.ami_events = prom.Counter("verbund112_ami_call_events", "typed AMI events", ["kind"], registry=registry)
        # labels() takes a lock and checks its values: each kind's child is looked up once (~15 events a call)
        self._ami_event_count = functools.cache(self.ami_events.labels)
        prom.Gauge("verbund112_ami_connected", "1 while logged in to AMI", registry=registry).set_function(
            lambda: 1.0 if self.ami.is_connected else 0.0
        )
        self.aml_messages = prom.Counter("verbund112_aml_messages", "AML messages by format and outcome",
                                         ["format", "outcome"], registry=registry)  # fmt: skip
        for kind in ("https", "sms-v1", "sms-v2"):  # shown as 0 from the start: an alert watches the refusals
            for outcome in ("stored", "refused", "unavailable"):
                self.aml_messages.labels(kind, outcome)
        self.aml_signatures_refused = prom.Counter("verbund112_aml_signatures_refused",
                                                   "signed AML deliveries refused, by reason", ["reason"],
                                                   registry=registry)  # fmt: skip
        for reason in SIGNATURE_REFUSALS:
            self.aml_signatures_refused.labels(reason)
        self.web_port = settings.web.port
        self.web_app: web.Application | None = None  # the app it serves, once started (its routes: test_openapi)
        self.started = asyncio.Event()
        self.stopped = asyncio.Event()  # set when run() has let go of every port and connection
        self._stop = asyncio.Event()
        self._signal_work: set[asyncio.Task[None]] = set()

    def _rules(self) -> Rules | None:
        return self.rules.rules

    def _rules_digest(self) -> str | None:
        rules = self.rules.rules
        return rules.digest if rules else None

    def _own_snapshot(self, now: float) -> SiteSnapshot:
        """This site's queue, the callers going round and its rules, for the partner and the supervisor view."""
        return dataclasses.replace(self.overflow.snapshot(now), circling=self.circling.callers(now),
                                   rules_digest=self._rules_digest() or "")  # fmt: skip

    def _places(self) -> Places | None:
        """District and centre lookups with the rules in force (none loaded: cards without them)."""
        rules = self.rules.rules
        return None if rules is None else Places(rules)

    def stop(self) -> None:
        self._stop.set()

    def reload_on_signal(self) -> None:
        """SIGHUP: re-read the rules file (refused if invalid; the old rules stay)."""
        task = asyncio.get_running_loop().create_task(self.rules.reload_quietly("SIGHUP"))
        self._signal_work.add(task)
        task.add_done_callback(self._signal_work.discard)

    def status(self) -> dict[str, Any]:
        stats = self.fastagi.stats
        return {
            "site": self.settings.site,
            "ami": {"connected": self.ami.is_connected, "connections": self.ami.connections},
            "fastagi": {"requests": stats.requests, "answered": stats.answered, "fallbacks": stats.fallbacks,
                        "rejected": stats.rejected, "refused": stats.refused},
            "redis": self.store.status(),
            "partner": {"site": self.settings.partner, "reporting": self.partner.alive,
                        "problem": self.partner.problem or None},
            "rules": {**self.rules_agreement.status(), "last_error": self.rules.last_error},
            "aml_pull": {"on": self.aml_pull.polls.running, "problem": self.aml_pull.problem,
                         "calls_polled": len(self.aml_pull.polls.polls)},
        }  # fmt: skip

    def health(self) -> Health:
        """What the service can do right now (for /readyz and the service manager's status line)."""
        return Health(ami=self.ami.is_connected, fastagi=self.fastagi.listening, rules=self.rules.rules is not None,
                      store=self.store.reachable)  # fmt: skip

    def _describe(self) -> str:
        """The service manager's status line (``systemctl status``): no personal data."""
        parts = dataclasses.asdict(self.health())
        down = [name for name, up in parts.items() if not up]
        state = f"down: {', '.join(down)}" if down else "all parts up"
        return f"serving {self.settings.site}: FastAGI {self.fastagi.port}, web {self.web_port}; {state}"

    def _web_ports(self) -> WebPorts:
        return WebPorts(
            site=self.settings.site, web=self.settings.web, aml=self.settings.aml, status=self.status,
            health=self.health,
            registry=self.registry, rules=self.rules, cards=self.pops, aml_sink=self.aml_sink,
            supervision=self.supervision, aml_messages=self.aml_messages,
            aml_signatures_refused=self.aml_signatures_refused,
        )  # fmt: skip

    def _outboxes(self) -> tuple[Outbox[Any], ...]:
        return self.call_records, self.move_records, self.abandoned.outbox, self.aml_sink.outbox

    def _loops(self) -> dict[str, Callable[[], Awaitable[None]]]:
        return {
            "ami": self.ami.run,
            "partner-watch": self.partner.run,
            "call-records": self.call_records.run,
            "move-records": self.move_records.run,
            "abandoned-calls": self.abandoned.outbox.run,
            "aml-fixes": self.aml_sink.outbox.run,
            "screen-pops": self.pops.follow_events,
            "announcements": self.pops.follow_announcements,
            "overflow": self.overflow.run,
            "aml-pull": self.aml_pull.run,
            "service-manager": lambda: self.manager.keep_alive(self._describe),
        }

    async def run(self) -> None:
        await self.fastagi.start()
        runner: web.AppRunner | None = None
        try:
            runner = await serve_web(self._web_ports(), self.screens)
            self.web_port = runner.addresses[0][1]
            self.web_app = runner.app
            async with asyncio.TaskGroup() as tasks:
                owned = [tasks.create_task(self.supervisor.run(name, loop), name=name)
                         for name, loop in self._loops().items()]  # fmt: skip
                self.started.set()
                self.manager.ready(self._describe())
                log.info(
                    "verbund112 %s serving: FastAGI %s, web %s", self.settings.site, self.fastagi.port, self.web_port
                )
                await self._stop.wait()
                log.info("verbund112 %s stopping", self.settings.site)
                self.manager.status(f"stopping {self.settings.site}")
                self.manager.stopping()
                await self.fastagi.stop()  # let calls in flight get their answer first
                for task in owned:
                    task.cancel()
        finally:
            try:
                await self.fastagi.stop()
                if runner is not None:
                    await runner.cleanup()
                self.rules.close()
                for outbox in self._outboxes():
                    await outbox.drain(DRAIN_S)
                await self.store.close()
            finally:
                self.stopped.set()
                log.info("verbund112 %s stopped", self.settings.site)

    # -- events -----------------------------------------------------------------

    def _routed(self, event: CallRouted) -> None:
        self.answer_times.on_routed(event)
        self.hub.publish(event)

    def _on_ami_event(self, event: events.SiteEvent) -> None:
        self._ami_event_count(type(event).__name__).inc()
        self.overflow.on_event(event)
        self.abandoned.on_event(event)
        self.circling.on_event(event)
        self.answer_times.on_event(event)
        self.hub.publish(event)

    async def _on_ami_connected(self, ami: AmiClient) -> None:
        # events may have been missed while disconnected (or while the service was down): the
        # queue is read afresh, the calls dispatchers hold get their cards (screen pops skip
        # those already shown), callers going round come back at their next round, and calls
        # that ended meanwhile are in the dialplan's AstDB outbox. Each step is tried on its own.
        self.circling.reconnected()
        for step in (self._read_queue, self._recover_answered_calls, self.abandoned.collect_outbox):
            try:
                await step(ami)
            except AmiError as exc:
                log.warning("AMI on-connect step %s failed: %s", step.__name__, exc)

    async def _read_queue(self, ami: AmiClient) -> None:
        listed = await ami.queue_status(self.settings.queue)
        self.overflow.on_queue_status(listed)
        for item in listed:
            self.hub.publish(item)

    async def _recover_answered_calls(self, ami: AmiClient) -> None:
        held = await ami.answered_calls()
        for call in held:
            self.hub.publish(call)
        self.answered_calls_read.inc(len(held))
        log.info("calls held by dispatchers after the AMI connect: %d", len(held))


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
