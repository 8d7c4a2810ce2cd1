"""The partner's liveness, in one place: this site's heartbeat out, the partner's in.

Every ``interval`` the watch writes this site's queue snapshot to the store
and reads the partner's in the same round trip. The partner counts as
*reporting* while its snapshot is fresh and its Asterisk is connected; a
missing, stale or malformed snapshot, or a store that does not answer, means
"not reporting", never "idle". Whoever needs the partner's state (routing,
the overflow, the status page) reads it here or is told by ``on_report``;
``verbund112_partner_up`` (1 reporting, 0 not or not yet) is for alerts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import prometheus_client as prom

from overflow.state import SiteSnapshot
from verbund112.store import PartnerReport, Store, StoreError

log = logging.getLogger(__name__)


class PartnerWatch:
    def __init__(
        self,
        *,
        site: str,
        partner: str,
        store: Store,
        own_snapshot: Callable[[float], SiteSnapshot],
        on_report: Callable[[SiteSnapshot | None], None],
        interval: float,
        registry: prom.CollectorRegistry,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.site = site
        self.partner = partner
        self._store = store
        self._own_snapshot = own_snapshot
        self._on_report = on_report
        self._interval = interval
        self._clock = clock
        self.snapshot: SiteSnapshot | None = None
        self.problem = "no report yet"
        self.reporting = asyncio.Event()  # set while the partner reports, for whoever must wait for it
        self.gone = asyncio.Event()  # the opposite, set from the first report on
        prom.Gauge(
            "verbund112_partner_up", "1 while the partner site reports (fresh heartbeat, its AMI up), 0 while not "
            "or not known yet", registry=registry,
        ).set_function(lambda: float(self.alive))  # fmt: skip

    @property
    def alive(self) -> bool:
        return self.reporting.is_set()

    async def run(self) -> None:
        try:
            while True:
                await self.beat()
                await asyncio.sleep(self._interval)
        finally:
            # A stopping site is gone for its partner now, not when the heartbeat expires.
            with contextlib.suppress(StoreError, asyncio.CancelledError):
                await self._store.delete_heartbeat(self.site)

    async def beat(self) -> None:
        now = self._clock()
        try:
            report = await self._store.exchange_heartbeat(self._own_snapshot(now), self.partner, now)
        except StoreError as exc:
            report = PartnerReport(None, f"store unreachable: {exc}")
        self._note(report)

    def _note(self, report: PartnerReport) -> None:
        self.snapshot, self.problem = report.snapshot, report.problem
        alive = report.snapshot is not None and report.snapshot.ami_connected
        if alive != self.alive:
            log.info("partner %s is %s", self.partner, "reporting" if alive else f"NOT reporting ({report.problem})")
        if alive:
            self.reporting.set()
            self.gone.clear()
        else:
            self.reporting.clear()
            self.gone.set()
        self._on_report(report.snapshot)
