"""Polling the central AML server while a 112 call is live and has no fix yet.

One task per call that entered at this site (the service's CallRouted), and
only for a number that can have AML (valid E.164, not a German fixed line).
Each round the task reads the store first (the push intake, the partner or an
earlier round may have a fix), then asks the server, and stores what it gets
with stores.add_aml_fix, which announces it: the dispatcher holding the call
sees it within the second. The task stops at the first fix of this call, when
the call's entry channel hangs up, or after aml_pull.max_duration, whichever
comes first. Between rounds it backs off (aml_pull.backoff_*).

A fix counts as this call's when its time is at most FRESH_SLACK_S before the
call was routed: the server keeps a number's fixes for an hour, and a fix of
an earlier call is stored (the card shows its age) but does not stop polling.

Every task belongs to one TaskGroup and is cancelled on shutdown; at most
aml_pull.max_polls run at once. A failed round (server, network, Redis) is
logged and counted and only costs that round; nothing here can stop the
service. Positions are logged at DEBUG only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable

import prometheus_client as prom

from aml.parse import AmlMessage
from aml.pull import OUTCOMES, AmlPullClient, AmlPullSettings, PullAnswer, PullError, PullSetupError, backoff
from routing.decision import AmlFix
from routing.numbers import NumberError, is_mobile, to_e164
from telephony import events
from verbund112.features.hub import CallRouted, EventHub
from verbund112.store import Store, StoreError, being_cancelled
from verbund112.store.records import AmlFixRecord

log = logging.getLogger(__name__)

FRESH_SLACK_S = 60.0  # handset clocks and the moment of routing are not exact
ENDED_MEMORY = 1000  # how many ended calls are remembered (a hangup can overtake its routing)
END_REASONS = ("fix", "fix-in-store", "call-ended", "max-duration", "shutdown", "error")

Fetch = Callable[[str], Awaitable[PullAnswer]]
Latest = Callable[[str], Awaitable[AmlFix | None]]
Keep = Callable[[str, AmlMessage], Awaitable[None]]


def number_to_poll(caller: str) -> str | None:
    """The E.164 number to ask for; None if it cannot have AML (garbled, German fixed line)."""
    try:
        e164 = to_e164(caller)
    except NumberError:
        return None
    if e164.startswith("+49") and not is_mobile(e164):
        return None  # foreign numbers stay in: roaming handsets send AML too
    return e164


def _stop_if_cancelled() -> None:
    """redis-py can swallow a cancellation and return; the call's end must still stop the poll."""
    if being_cancelled():
        raise asyncio.CancelledError


class PullMetrics:
    def __init__(self, registry: prom.CollectorRegistry) -> None:
        self.requests = prom.Counter(
            "verbund112_aml_pull_requests", "AML pull requests by outcome", ["outcome"], registry=registry
        )
        for outcome in OUTCOMES:
            self.requests.labels(outcome)
        self.seconds = prom.Histogram(
            "verbund112_aml_pull_seconds",
            "AML pull request duration",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=registry,
        )
        self.ended = prom.Counter("verbund112_aml_polls_ended", "AML polls ended, by reason", ["reason"],
                                  registry=registry)  # fmt: skip
        for reason in END_REASONS:
            self.ended.labels(reason)
        self.skipped = prom.Counter(
            "verbund112_aml_polls_skipped", "calls not polled, by reason", ["reason"], registry=registry
        )
        self.active = prom.Gauge("verbund112_aml_polls_active", "calls being polled now", registry=registry)


class AmlPolls:
    """The poll tasks of the live calls, by the Uniqueid of the call's entry channel."""

    def __init__(
        self,
        settings: AmlPullSettings,
        metrics: PullMetrics,
        *,
        latest: Latest,
        store: Keep,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.polls: dict[str, asyncio.Task[str]] = {}
        self.ended: OrderedDict[str, str] = OrderedDict()  # Uniqueid -> why its poll ended (or never began)
        self._latest = latest
        self._store = store
        self._sleep = sleep
        self._fetch: Fetch | None = None
        self._group: asyncio.TaskGroup | None = None
        self._stopping: dict[str, str] = {}
        self._changed = asyncio.Event()
        metrics.active.set_function(lambda: float(len(self.polls)))

    @property
    def running(self) -> bool:
        return self._group is not None

    @contextlib.asynccontextmanager
    async def polling(self, fetch: Fetch) -> AsyncIterator[None]:
        """Polls may start inside; on leaving, every poll task is cancelled and awaited."""
        try:
            async with asyncio.TaskGroup() as group:
                self._fetch, self._group = fetch, group
                yield
                for task in list(self.polls.values()):
                    task.cancel()
        finally:
            self._fetch = None
            self._group = None

    def call_started(self, uniqueid: str, call_id: str, caller: str) -> None:
        """A 112 call entered here (CallRouted): poll for it if it can have AML."""
        if uniqueid in self.polls or uniqueid in self.ended:
            return  # a repeated announcement, or the call already ended
        number = number_to_poll(caller)
        if number is None:
            self.metrics.skipped.labels("number").inc()
            return
        if self._group is None:
            self.metrics.skipped.labels("not-running").inc()
            return
        if len(self.polls) >= self.settings.max_polls:
            self.metrics.skipped.labels("limit").inc()
            log.warning("AML pull: %d calls polled already (aml_pull.max_polls); call %s is not", len(self.polls),
                        call_id)  # fmt: skip
            return
        task = self._group.create_task(self._poll(call_id, number, time.time()), name=f"aml-pull-{uniqueid}")
        self.polls[uniqueid] = task
        # a callback, not a finally: a task cancelled before its first step never runs its body
        task.add_done_callback(lambda done: self._ended(uniqueid, call_id, done))

    def call_ended(self, uniqueid: str) -> None:
        """A channel hung up: the poll of the call it carried ends."""
        task = self.polls.get(uniqueid)
        if task is None:
            self._remember(uniqueid, "call-ended")  # so a late CallRouted starts nothing
            return
        self._stopping[uniqueid] = "call-ended"
        task.cancel()

    async def finished(self, uniqueid: str) -> str:
        """Wait until the poll of a call has ended; why it ended."""
        while uniqueid not in self.ended:
            await self._changed.wait()
        return self.ended[uniqueid]

    # -- one call ----------------------------------------------------------------

    async def _poll(self, call_id: str, number: str, started: float) -> str:
        """Poll until there is a fix; why it ended (cancellation: see _ended)."""
        try:
            async with asyncio.timeout(self.settings.max_duration):
                return await self._until_fix(call_id, number, started)
        except TimeoutError:
            return "max-duration"
        except Exception:
            log.exception("AML pull for call %s failed; the call goes on without it", call_id)
            return "error"

    def _ended(self, uniqueid: str, call_id: str, task: asyncio.Task[str]) -> None:
        if task.cancelled():
            reason = self._stopping.pop(uniqueid, "shutdown")
        else:
            reason = "error" if task.exception() is not None else task.result()
            self._stopping.pop(uniqueid, None)
        self.polls.pop(uniqueid, None)
        self._remember(uniqueid, reason)
        self.metrics.ended.labels(reason).inc()
        log.info("AML pull for call %s ended: %s", call_id, reason)

    async def _until_fix(self, call_id: str, number: str, started: float) -> str:
        delays = backoff(self.settings.backoff_first, self.settings.backoff_factor, self.settings.backoff_max)
        stored: set[tuple[float | None, float, float, float]] = set()
        while True:
            has_fix = await self._has_fix(number, started)
            _stop_if_cancelled()
            if has_fix:
                return "fix-in-store"
            answer = await self._ask(number)
            kept = answer is not None and await self._keep(call_id, number, answer, started, stored)
            _stop_if_cancelled()
            if kept:
                return "fix"
            await self._sleep(next(delays))

    async def _has_fix(self, number: str, started: float) -> bool:
        try:
            fix = await self._latest(number)
        except StoreError as exc:
            log.warning("AML store not read (%s); asking the server anyway", exc)
            return False
        return fix is not None and fix.time >= started - FRESH_SLACK_S

    async def _ask(self, number: str) -> PullAnswer | None:
        assert self._fetch is not None
        began = time.perf_counter()
        try:
            answer = await self._fetch(number)
        except PullError as exc:
            self.metrics.requests.labels(exc.outcome).inc()
            log.warning("AML pull request failed (%s): %s", exc.outcome, exc)
            return None
        finally:
            self.metrics.seconds.observe(time.perf_counter() - began)
        self.metrics.requests.labels("fix" if answer.fixes else "no-fix").inc()
        for problem in answer.problems:
            log.warning("AML pull: an entry of the server's answer skipped: %s", problem)
        return answer

    async def _keep(
        self,
        call_id: str,
        number: str,
        answer: PullAnswer,
        started: float,
        stored: set[tuple[float | None, float, float, float]],
    ) -> bool:
        """Store the fixes not stored yet (oldest first); whether one of them is this call's."""
        fresh = False
        for message in answer.fixes:
            position = message.position
            assert position is not None  # PullAnswer holds fixes only
            key = (message.fix_time, position.lat, position.lon, position.radius_m)
            if key in stored:
                continue
            try:
                await self._store(number, message)
            except StoreError as exc:
                log.warning("AML fix from the server not stored (Redis: %s); asking again", exc)
                return False
            stored.add(key)
            log.debug("AML pulled %s %.5f %.5f r=%.0f", number, position.lat, position.lon, position.radius_m)
            fresh = fresh or message.fix_time is None or message.fix_time >= started - FRESH_SLACK_S
        if fresh:
            log.info("AML fix for call %s fetched from the central server", call_id)
        return fresh

    def _remember(self, uniqueid: str, reason: str) -> None:
        self.ended[uniqueid] = reason
        while len(self.ended) > ENDED_MEMORY:
            self.ended.popitem(last=False)
        self._changed.set()
        self._changed = asyncio.Event()


class AmlPull:
    """The AML pull of this site: polls for the calls routed here, if configured.

    ``settled`` is set once the pull is on, or off (``problem`` says why), so
    whoever must know can wait for it instead of guessing.
    """

    def __init__(
        self,
        *,
        site: str,
        settings: AmlPullSettings,
        store: Store,
        retention_s: int,
        hub: EventHub,
        registry: prom.CollectorRegistry,
    ) -> None:
        self.site = site
        self.settings = settings
        self._store = store
        self._retention_s = retention_s
        self._hub = hub
        self.polls = AmlPolls(settings, PullMetrics(registry), latest=store.latest_aml_fix, store=self._store_fix)
        self.problem = "" if settings.enabled else "disabled"
        self.settled = asyncio.Event()

    async def run(self) -> None:
        if not self.settings.enabled:
            self.settled.set()
            return
        try:
            client = AmlPullClient(self.settings, user_agent=f"verbund112 {self.site}")
        except PullSetupError as exc:
            # AML is supplemental: the calls are routed and popped without it
            self.problem = str(exc)
            self.settled.set()
            log.error("AML pull off: %s", exc)
            return
        with self._hub.subscribe(kinds=(CallRouted, events.ChannelHungUp)) as queue:
            async with client, self.polls.polling(client.fetch):
                log.info("AML pull from %s on", self.settings.url)
                self.settled.set()
                while True:
                    event = await queue.get()
                    if isinstance(event, CallRouted):
                        self.polls.call_started(event.uniqueid, event.call_id, event.caller_number)
                    elif isinstance(event, events.ChannelHungUp):
                        self.polls.call_ended(event.uniqueid)

    async def _store_fix(self, number: str, message: AmlMessage) -> None:
        assert message.position is not None
        fix = AmlFix(message.position, message.fix_time or time.time())
        record = AmlFixRecord.of(fix, time.time(), confidence=message.confidence, format="pull",
                                 altitude_m=message.altitude_m)  # fmt: skip
        await self._store.add_aml_fix(number, record, self._retention_s)
