"""The FastAGI route handler: where does this 112 call go?

Asterisk asks over FastAGI with the call's channel variables (the dialplan
contract, telephony.dialplan). The handler reads every location source it has
(PIDF-LO from the INVITE, the newest AML fix in the store, the cell of
P-Access-Network-Info), lets the pure decision (routing.decision.decide)
choose, answers V112_ROUTE and announces CallRouted. What the entry site knew
is queued for the store (CallRecord), so the site that answers the call shows
it. Anything that fails or takes too long leaves the dialplan's own local
route (telephony.fastagi answers the fallback reply).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable

import prometheus_client as prom
import structlog
from pydantic import ValidationError

from routing.decision import AmlFix, CallFacts, Decision, Route, SiteStates, decide
from routing.location import LocationError, Position, parse_access_network_info, parse_location_profile
from routing.numbers import NumberError, to_e164
from routing.rules import Rules
from telephony import dialplan
from telephony.fastagi import OUTCOMES, AgiReply, AgiSession
from verbund112.features.hub import CallRouted
from verbund112.store import StoreError
from verbund112.store.records import CallRecord, RoutedLocation, RoutedPosition

log = logging.getLogger(__name__)

FALLBACK_REPLY = AgiReply(((dialplan.ROUTE, dialplan.ROUTE_LOCAL),))
assert Route.LOCAL.value == dialplan.ROUTE_LOCAL  # the decision speaks the dialplan's words

LatestAmlFix = Callable[[str, float], Awaitable[AmlFix | None]]


class RoutingMetrics:
    def __init__(self, registry: prom.CollectorRegistry) -> None:
        self.requests = prom.Counter(
            "verbund112_fastagi_requests", "FastAGI requests by outcome", ["outcome"], registry=registry
        )
        self._requests = functools.cache(self.requests.labels)  # each outcome's child looked up once
        for outcome in OUTCOMES:
            self._requests(outcome)  # shown as 0 from the start: the fallback alert needs the series
        self.seconds = prom.Histogram(
            "verbund112_fastagi_seconds",
            "FastAGI exchange duration",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=registry,
        )
        self.refused = prom.Counter(
            "verbund112_fastagi_refused", "FastAGI peers refused: not our Asterisk (peer address, secret)",
            ["reason"], registry=registry,
        )  # fmt: skip
        for reason in ("peer", "secret"):
            self.refused.labels(reason)  # shown as 0 from the start, so an alert can watch the rate

    def exchange_done(self, outcome: str, seconds: float) -> None:
        self._requests(outcome).inc()
        self.seconds.observe(seconds)

    def peer_refused(self, reason: str) -> None:
        self.refused.labels(reason).inc()


class RoutingService:
    def __init__(
        self,
        *,
        site: str,
        partner: str,
        rules: Callable[[], Rules | None],
        partner_alive: Callable[[], bool],
        latest_aml_fix: LatestAmlFix,
        aml_read_within: float,
        announce: Callable[[CallRouted], None],
        remember: Callable[[CallRecord], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.site = site
        self.partner = partner
        self._rules = rules
        self._partner_alive = partner_alive
        self._latest_aml_fix = latest_aml_fix
        self._aml_read_within = aml_read_within
        self._announce = announce
        self._remember = remember
        self._clock = clock

    async def route(self, session: AgiSession) -> AgiReply:
        request = session.request
        if request.script != dialplan.ROUTE_SCRIPT:
            raise ValueError(f"unknown FastAGI script {request.script!r}")
        # one round trip for everything the dialplan filtered; the PIDF-LO text separately
        channel = await session.get_variables(list(dialplan.ROUTE_REQUEST_VARIABLES))
        call_id = channel[dialplan.CALL_ID] or request.uniqueid
        structlog.contextvars.bind_contextvars(call_id=call_id, site=self.site)
        try:
            rules = self._rules()
            if rules is None:
                raise ValueError("no valid routing rules loaded")
            # the rules' budget for finding the location; past it the dialplan routes locally
            async with asyncio.timeout(rules.spec.decision_deadline_ms / 1000):
                facts, position, problem = await self._call_facts(session, call_id, channel, rules)
            decision = decide(facts, rules, self._site_states())
            record = self._record(facts, decision)
            self._announce(
                CallRouted(self.site, call_id, request.uniqueid, facts.caller_number, position, problem, decision,
                           record)
            )  # fmt: skip
            # the district, not the reason: that may name a cell (a position); positions are DEBUG only
            used = decision.location
            log.info("call routed %s to %s (location: %s)", decision.route.value, decision.centre,
                     "none" if used is None else f"{used.source} in {used.district}")  # fmt: skip
            log.debug("routing reason: %s", decision.reason)
            if record is not None:
                self._remember(record)
            # one SET per round trip: only what the dialplan acts on
            reply = [(dialplan.ROUTE, decision.route.value)]
            if decision.external_number:
                reply.append((dialplan.TARGET_NUMBER, decision.external_number))
            return AgiReply(tuple(reply))
        finally:
            structlog.contextvars.unbind_contextvars("call_id", "site")

    async def _call_facts(
        self, session: AgiSession, call_id: str, channel: dict[str, str], rules: Rules
    ) -> tuple[CallFacts, Position | None, str]:
        """Everything known about the call's location, each source read defensively."""
        caller = channel[dialplan.CALLER]
        position, civic, problem = None, None, ""
        if channel[dialplan.GEO_HEADER_LEN] not in ("", "0"):
            info = await session.get_variable(dialplan.GEO_LOCATION) or ""
            try:
                located = parse_location_profile(info, channel[dialplan.GEO_METHOD])
            except LocationError as exc:
                problem = str(exc)  # says why, never quotes the position (routing.location)
                log.warning("PIDF-LO location of the call ignored: %s", problem)
                log.debug("the PIDF-LO location_info was %r", info)
            else:
                position, civic = (located, None) if isinstance(located, Position) else (None, located)
        cell_id = None
        if pani := channel[dialplan.PANI]:
            try:
                cell_id = parse_access_network_info(pani)
            except LocationError as exc:
                log.warning("P-Access-Network-Info of the call ignored: %s", exc)
        now = self._clock()
        aml = None
        if position is None or aml_before_pidf(rules):
            try:
                aml = await self._latest_aml_fix(to_e164(caller), self._aml_read_within)
            except NumberError:
                pass  # the decision notes the unusable number
            except StoreError as exc:
                log.warning("AML store not read for this call: %s", exc)
        facts = CallFacts(self.site, call_id, caller, position, problem, aml, cell_id, now, civic)
        if position is not None:
            # Positions are personal data: DEBUG only.
            log.debug("caller position %.5f %.5f r=%.0f m", position.lat, position.lon, position.radius_m)
        if civic is not None:
            log.debug("caller civic address %s", civic.lines())
        return facts, position, problem

    def _record(self, facts: CallFacts, decision: Decision) -> CallRecord | None:
        try:
            return call_record(facts, decision)
        except ValidationError as exc:  # never a reason to route differently
            log.error("call record not kept (%d problems in %s)", exc.error_count(), exc.title)
            return None

    def _site_states(self) -> SiteStates:
        alive = {self.site}
        if self._partner_alive():
            alive.add(self.partner)
        return SiteStates(frozenset(alive))


def aml_before_pidf(rules: Rules) -> bool:
    """Whether an AML fix could matter although the INVITE carried a position."""
    order = rules.spec.source_priority
    if "aml" not in order:
        return False
    return "pidf" not in order or order.index("aml") < order.index("pidf")


def call_record(facts: CallFacts, decision: Decision) -> CallRecord:
    """What the entry site knew about a call, for the partner that takes it."""
    location = None
    if (used := decision.location) is not None:
        position = None
        if used.position is not None:
            p = used.position
            position = RoutedPosition(lat=p.lat, lon=p.lon, radius_m=p.radius_m, method=p.method,
                                      altitude_m=p.altitude_m)  # fmt: skip
        location = RoutedLocation(source=used.source, district=used.district, ags=used.ags, share=used.share,
                                  position=position)  # fmt: skip
    return CallRecord(
        call_id=facts.call_id, routed_at=facts.now, entry_site=facts.site,
        caller=decision.caller_e164 or facts.caller_number, routed_to=decision.centre, route=decision.route.value,
        reason=decision.reason, certain=decision.certain, flags=list(decision.flags), location=location,
        address=None if facts.civic is None else dict(facts.civic.elements),
    )  # fmt: skip
