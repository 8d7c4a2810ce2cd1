"""Fault drills: a burst of 112 calls into both sites while one part of the Verbund fails.

`scripts/drill` (or `make drill`, `python -m lab.drill`) runs every drill at full size (2 calls/s
into each site for 60 s) and prints a table; `--size ci` is the trimmed load the integration tests
use (tests/integration/test_drills.py), `--only NAME` runs one drill.

Each drill starts a lab Verbund of its own (fresh Redis, both Asterisk sites with answering desks,
both services under the lab's supervisor (lab/supervisor.py: restart on exit, kill and restart on a
missed watchdog ping, as systemd in production) so that a drill can kill them), then:

- the load: every call has its own caller number; a fifth carry a PIDF-LO position in the other
  site's district (routed to the partner: its card must show what the entry site knew), a fifth
  hang up while they wait (they must reach the callback list), a third get an AML fix posted to an
  intake while they ring (a fix that got a 2xx must be readable afterwards);
- the desks: one sipp UAS per site answers every queue member (bench-d1..N) after 1 s of ringing;
  one WebSocket per seat and site collects the cards, reconnecting as the dispatcher page does;
- the carrier: from the fault on, a dead site's share goes to the other site until it is healed
  (NotrufV § 5), and a caller whose line went dead with the site (or who got no answer) redials at
  once, to a site the carrier still reaches;
- the fault at a third of the burst, the heal at two thirds; the time to recover is from the heal
  (for a fault that heals itself, from the fault) until the drill's check says the part is back.

The accounting, per call: answered by a desk (its card arrived; at the partner with the entry
site's routing and position) or on the callback list, exactly once; every AML fix answered 2xx in
the AML trail. "lost" is the sum of the misses, and must be 0. "degraded" is the time from the fault
to the first call after the last impaired one (impaired: a miss, a redial, or a card without the
entry site's routing), 0 when no call was impaired.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import prometheus_client as prom

from lab import lab, netns, overload
from lab.processes import AsteriskSite, LabError, Place, free_rtp_base, release_rtp_base, stop_process
from telephony import dialplan
from verbund112.store import RedisSettings, Store

SEATS_PER_SITE = 40  # answering desks per site (each one call at a time): 4 calls/s at TALK_MS
# A 112 call lasts minutes; 10 s is short of that but longer than a hung service's outage (the
# watchdog's 4 s and the restart), as nearly every real call is: a call that began and ended
# entirely inside the outage could only get its card after it ended.
TALK_MS = 10000
ABANDON_AFTER_MS = 300  # of ringing; the desks answer after 1000
FAULT_AT, HEAL_AT = 1 / 3, 2 / 3  # of the burst
CALLER_MEDIA_SLOTS = 100  # callers up at once, at most
MAX_ATTEMPTS = 3  # a caller whose call went dead redials at most twice
TRUNK_WAIT_S = 10.0  # drill 6: how long the cut waits for a call ringing over the trunk
MIN_CUT_S = 6.0  # drill 6: the link stays cut at least this long (the services see the split within about 2 s)
SPLIT_JENA_SEATS = 6  # drill 6: fewer than the burst needs at 2 calls/s and TALK_MS, so the overflow moves calls
SETTLE_S = 20.0  # after the last call: how long cards, callback entries and AML may take to show
# a position in each site's district: a call into the other site with it is routed to this one
POSITIONS = {"jena": (50.9279, 11.5891), "gera": (50.8806, 12.0824)}
HTTP = aiohttp.ClientTimeout(total=3)


@dataclass(frozen=True)
class Load:
    rate: float  # calls per second into each site
    seconds: float

    @property
    def calls_per_site(self) -> int:
        return round(self.rate * self.seconds)


SIZES = {"full": Load(rate=2.0, seconds=60), "ci": Load(rate=2.0, seconds=8)}


def other(site: str) -> str:
    return next(name for name in lab.SITES if name != site)


# -- the calls -------------------------------------------------------------------------------


@dataclass
class Attempt:
    site: str
    started: float
    ended: float = 0.0
    exit_code: int | None = None
    answered: bool = False  # the carrier saw the 200 OK
    cut_by_fault: bool = False  # the carrier lost the site while this attempt was up


@dataclass
class AmlDelivery:
    lat: float
    lon: float
    site: str = ""
    accepted: bool = False  # got a 2xx from an intake


@dataclass
class Call:
    number: str
    home: str  # the site the network sends this caller to
    kind: str  # "plain", "pidf" (a position in the partner's district) or "abandon"
    aml: AmlDelivery | None
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def entered(self) -> float:
        return self.attempts[0].started if self.attempts else 0.0

    @property
    def answered(self) -> bool:
        return any(attempt.answered for attempt in self.attempts)

    @property
    def redialled(self) -> bool:
        return len(self.attempts) > 1


def plan_calls(load: Load, drill_number: int) -> list[tuple[float, Call]]:
    """When each call starts (seconds into the burst) and what it is; each with its own number."""
    planned = []
    for index, site in itertools.product(range(load.calls_per_site), lab.SITES):
        digit = lab.SITES.index(site) + 1
        number = f"+49151{drill_number:02d}{digit}{index:04d}"
        kind = ("plain", "pidf", "plain", "abandon", "plain")[index % 5]
        aml = None
        if index % 3 == 0 and kind != "abandon":
            lat, lon = POSITIONS[site]
            aml = AmlDelivery(lat=round(lat + index * 1e-5, 6), lon=round(lon + digit * 1e-5, 6))
        offset = index / load.rate + (0.5 / load.rate if site == "gera" else 0.0)
        planned.append((offset, Call(number, site, kind, aml)))
    return sorted(planned, key=lambda item: item[0])


# -- the lab of one drill ------------------------------------------------------------------


class Screens:
    """One WebSocket per answering seat and site, collecting the cards; reconnects like the page."""

    def __init__(self, verbund: lab.Verbund, seats: dict[str, list[str]]) -> None:
        self.verbund = verbund
        self.seats = seats
        self.cards: list[dict[str, Any]] = []
        self.connected: set[tuple[str, str]] = set()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, client: aiohttp.ClientSession) -> None:
        for site in lab.SITES:
            for seat in self.seats[site]:
                self._tasks.append(asyncio.create_task(self._follow(client, site, seat)))

    async def _follow(self, client: aiohttp.ClientSession, site: str, seat: str) -> None:
        url = f"http://{self.verbund.host(site)}:{self.verbund.ports[site].web}/ws/v1/dispatchers/{seat}"
        headers = {"Authorization": f"Bearer {self.verbund.desk_tokens[seat]}"}
        while True:
            try:
                async with client.ws_connect(url, headers=headers, heartbeat=5) as socket:
                    async for message in socket:
                        if message.type != aiohttp.WSMsgType.TEXT:
                            continue
                        data = json.loads(message.data)
                        if data.get("type") == "hello":
                            self.connected.add((site, seat))
                        elif data.get("type") == "card":
                            self.cards.append(data | {"received_at": time.time()})
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
                pass
            self.connected.discard((site, seat))
            await asyncio.sleep(0.5)  # the service is away: try again, as the dispatcher page does

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class DrillLab:
    """A lab Verbund with both services supervised, answering desks, screens and the carrier."""

    def __init__(
        self, verbund: lab.Verbund, work: Path, log: Callable[[str], None], split: netns.SplitSites | None = None
    ) -> None:
        self.verbund = verbund
        self.work = work
        self.log = log
        self.split = split  # drill 6: the sites' namespaces and the link between them
        self.services: dict[str, lab.SupervisedService] = {}
        self.desks: dict[str, subprocess.Popen[bytes]] = {}
        self.desk_media: list[int] = []  # the desks' RTP ranges, given back when they stop
        seats = {
            site: [f"bench-d{i}" for i in range(1, verbund.site(site).values.bench_desks + 1)] for site in lab.SITES
        }
        self.screens = Screens(verbund, seats)
        self.unreachable: set[str] = set()  # sites the carrier no longer reaches
        self.up: dict[str, dict[asyncio.subprocess.Process, Attempt]] = {site: {} for site in lab.SITES}
        self.client: aiohttp.ClientSession | None = None
        self.before: dict[str, Any] = {}  # what a fault noted for its recovery check
        self.watcher: asyncio.Task[None] | None = None  # a fault's observer, stopped by its heal

    @classmethod
    @contextlib.asynccontextmanager
    async def started(cls, drill: Drill, log: Callable[[str], None]) -> AsyncIterator[DrillLab]:
        instance = f"drill-{drill.name}-{os.getpid()}"
        split = netns.SplitSites(instance) if drill.split_sites else None
        layout = None
        if split is not None:
            await asyncio.to_thread(split.build)  # removes what a failed run of this instance left first
            layout = lab.split_layout(split)
        try:
            verbund = await asyncio.to_thread(
                lab.start_verbund, instance, log=log, bench=True, layout=layout,
                bench_desks={site: drill.seats.get(site, SEATS_PER_SITE) for site in lab.SITES},
            )  # fmt: skip
        except BaseException:
            if split is not None:
                await asyncio.to_thread(split.remove)
            raise
        work = lab.lab_dir() / verbund.instance
        work.mkdir(parents=True, exist_ok=True)
        drill_lab = cls(verbund, work, log, split)
        try:
            async with aiohttp.ClientSession(timeout=HTTP) as client:
                drill_lab.client = client
                for site in lab.SITES:
                    drill_lab.desk_media.append(free_rtp_base(10))
                    drill_lab.desks[site] = drill_desk(verbund.site(site), work, drill_lab.desk_media[-1])
                    await drill_lab.start_service(site)
                drill_lab.screens.start(client)
                try:
                    await drill_lab.wait_for(drill_lab.ready, 30, "services, partners and screens ready")
                    yield drill_lab
                finally:
                    await drill_lab.screens.stop()
        finally:
            for service in drill_lab.services.values():
                await asyncio.to_thread(service.stop)
            for process in drill_lab.desks.values():
                await asyncio.to_thread(stop_process, process.pid, 15)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=5)
            for media in drill_lab.desk_media:  # a full run's later drills (overload: 4000 in a row) need them
                release_rtp_base(media)
            try:
                await asyncio.to_thread(verbund.stop)
            finally:
                if split is not None:
                    await asyncio.to_thread(split.remove)

    # -- parts a drill can break and mend --

    async def start_service(self, site: str) -> None:
        if (gone := self.services.get(site)) is not None:
            await asyncio.to_thread(gone.stop)  # what is left of a lost site's supervisor, reaped
        self.services[site] = await asyncio.to_thread(lab.start_supervised_service, self.verbund, site, self.work)

    def service_pid(self, site: str) -> int:
        pid = self.services[site].pid
        if pid is None:
            raise LabError(f"drill: no service of {site} runs")
        return pid

    def lose_service(self, site: str) -> None:
        """The service's host is gone: its supervisor and the service die (kill -9), nothing restarts them."""
        pid = self.service_pid(site)
        os.kill(self.services[site].supervisor.pid, signal.SIGKILL)
        os.kill(pid, signal.SIGKILL)

    def kill_asterisk(self, site: str) -> None:
        os.kill(self.verbund.site(site).pid, signal.SIGKILL)
        self.verbund.site(site).process.wait(timeout=10)  # type: ignore[union-attr]

    async def start_asterisk(self, site: str) -> None:
        await asyncio.to_thread(self.verbund.site(site).start)

    def cut_ami(self, site: str) -> str:
        """Kill both ends of the service's AMI connection in the kernel (ss -K): a cut with a reset."""
        port = self.verbund.site(site).values.ami_port
        result = subprocess.run(
            ["ss", "-K", "-t", "state", "established", f"( sport = :{port} or dport = :{port} )"],
            capture_output=True, text=True, check=False, timeout=10,
        )  # fmt: skip
        if result.returncode != 0:
            raise LabError(f"ss -K failed: {result.stderr.strip()}")
        return result.stdout

    async def carrier_loses(self, site: str) -> None:
        """The network no longer reaches the site: its share goes to the other one, and the callers
        whose calls were up there hear the line go dead (they redial; see Burst)."""
        self.unreachable.add(site)
        for process, attempt in list(self.up[site].items()):
            attempt.cut_by_fault = True
            with contextlib.suppress(ProcessLookupError):
                process.kill()

    def kill_sentinel(self, name: str) -> None:
        sentinel = self.verbund.redis.sentinels[name]
        os.kill(sentinel.pid, signal.SIGKILL)
        if sentinel.process is not None:
            sentinel.process.wait(timeout=10)
        sentinel.pid = 0

    async def start_redis_node(self, name: str) -> None:
        await asyncio.to_thread(self.verbund.redis.nodes[name].start)

    async def start_sentinel(self, name: str) -> None:
        """Started again with the configuration it rewrote itself (it finds the current master there)."""
        redis = self.verbund.redis
        master = redis.master_node()
        start = redis.sentinels[name].start
        await asyncio.to_thread(
            start, master.port, redis.password, redis.down_after_ms, redis.failover_timeout_ms, master.place.host
        )

    async def time_failover(self, killed: str) -> None:
        """Waits until the sentinels name a new, live master; notes how long that took from now (the kill)."""
        killed_at = time.monotonic()
        self.before["new_master"] = await asyncio.to_thread(self.verbund.redis.wait_for_master, killed)
        self.before["failover_s"] = failover_s = time.monotonic() - killed_at
        self.log(f"  Redis failover: {killed} killed, {self.before['new_master']} master after {failover_s:.1f} s")

    def redis_whole(self) -> bool:
        try:
            self.verbund.redis.wait_whole(timeout=0.1)
        except LabError:
            return False
        return True

    def carrier_reaches(self, site: str) -> None:
        self.unreachable.discard(site)

    def route(self, home: str) -> str:
        """The site the carrier sends a call to now."""
        return other(home) if home in self.unreachable else home

    # -- what the drill reads --

    async def status(self, site: str) -> dict[str, Any] | None:
        assert self.client is not None
        url = f"http://{self.verbund.host(site)}:{self.verbund.ports[site].web}/api/v1/status"
        try:
            async with self.client.get(url, headers={"Authorization": f"Bearer {self.verbund.read_token}"}) as answer:
                return dict(await answer.json()) if answer.status == 200 else None
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
            return None

    async def serving(self, site: str) -> bool:
        """The site's service has AMI and sees its partner reporting."""
        status = await self.status(site)
        return bool(status and status["ami"]["connected"] and status["partner"]["reporting"])

    async def ready(self) -> bool:
        served = all([await self.serving(site) for site in lab.SITES])
        return served and len(self.screens.connected) == sum(len(seats) for seats in self.screens.seats.values())

    async def wait_for(self, check: Callable[[], Awaitable[bool]], within: float, what: str) -> float:
        """Poll until check() holds; returns the seconds it took."""
        started = time.monotonic()
        while not await check():
            if time.monotonic() - started > within:
                raise LabError(f"drill: not within {within} s: {what}")
            await asyncio.sleep(0.1)
        return time.monotonic() - started


def drill_desk(site: AsteriskSite, work: Path, media: int) -> subprocess.Popen[bytes]:
    """The site's answering desks: one sipp UAS behind every bench-dN queue member (in the site's namespace)."""
    assert site.values.bench_desk_uri is not None
    port = site.values.bench_desk_uri.rsplit(":", 1)[1]
    args = [
        "sipp", "-sf", str(lab.SIPP_DIR / "drill_desk.xml"), "-i", lab.BENCH_DESK_ADDRESS, "-p", port,
        "-nostdin", "-nd", "-mp", str(media), f"{site.values.sip_bind_address}:{site.values.sip_port}",
    ]  # fmt: skip
    with (work / f"{site.values.name}-drill-desk.log").open("wb") as log_file:
        return subprocess.Popen(
            Place(netns=site.netns).command(args), stdout=subprocess.DEVNULL, stderr=log_file, cwd=work,
            start_new_session=True,
        )  # fmt: skip


# -- the load --------------------------------------------------------------------------------


class Burst:
    """Places the planned calls as the carrier would, redials dead ones, posts the AML."""

    def __init__(self, drill_lab: DrillLab, load: Load, drill_number: int) -> None:
        self.lab = drill_lab
        self.load = load
        self.planned = plan_calls(load, drill_number)
        self.calls = [call for _, call in self.planned]
        self.started = 0.0
        # media ports of the callers' sipp: one range for the burst, slots reused as calls end (a range per
        # call would scatter small ranges until the next drill's Asterisk finds no 400 free ports in a row)
        self.media_base = free_rtp_base(CALLER_MEDIA_SLOTS * 10)
        self.media = collections.deque(range(self.media_base, self.media_base + CALLER_MEDIA_SLOTS * 10, 10))

    def close(self) -> None:
        """Every call's sipp has ended: the media range may go to the next drill."""
        release_rtp_base(self.media_base)

    async def run(self) -> None:
        self.started = time.time()
        tasks = []
        for offset, call in self.planned:
            await asyncio.sleep(max(0.0, self.started + offset - time.time()))
            tasks.append(asyncio.create_task(self._call(call)))
        await asyncio.gather(*tasks)

    async def _call(self, call: Call) -> None:
        if call.aml is not None:
            aml = asyncio.create_task(self._post_aml(call))
        while len(call.attempts) < MAX_ATTEMPTS:
            attempt = await self._attempt(call, self.lab.route(call.home))
            if attempt.answered or (attempt.exit_code == 0 and not attempt.cut_by_fault):
                break
        if call.aml is not None:
            await aml

    async def _attempt(self, call: Call, site: str) -> Attempt:
        attempt = Attempt(site=site, started=time.time())
        call.attempts.append(attempt)
        scenario = {"plain": "carrier_112.xml", "pidf": "carrier_112_pidf.xml", "abandon": "carrier_112_abandon.xml"}
        folder = self.lab.work / "calls" / f"{call.number.lstrip('+')}-{len(call.attempts)}"
        folder.mkdir(parents=True)
        media = self.media.popleft()
        args = [
            "sipp", f"{self.lab.verbund.host(site)}:{self.lab.verbund.site(site).values.sip_port}",
            "-sf", str(lab.SIPP_DIR / scenario[call.kind]), "-i", self.lab.verbund.layout.carrier,
            "-p", str(lab._free_carrier_port(self.lab.verbund.layout.carrier)), "-m", "1",
            "-key", "caller", call.number, "-key", "uui", "00",
            "-d", str(ABANDON_AFTER_MS if call.kind == "abandon" else TALK_MS),
            "-timeout", "90s", "-timeout_error", "-nostdin", "-nd", "-mp", str(media),
            "-trace_rtt", "-rtt_freq", "1",  # a line in *_rtt.csv: the 200 OK came (rtd on that recv)
        ]  # fmt: skip
        if call.kind == "pidf":
            args += ["-key", "shape", lab.pidf_circle(*POSITIONS[other(call.home)], 30)]
        process = await asyncio.create_subprocess_exec(
            *args, cwd=folder, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
        self.lab.up[site][process] = attempt
        try:
            attempt.exit_code = await asyncio.wait_for(process.wait(), 120)
        except (TimeoutError, asyncio.CancelledError):
            process.kill()
            attempt.exit_code = await process.wait()
            if asyncio.current_task().cancelling():  # type: ignore[union-attr]
                raise
        finally:
            self.lab.up[site].pop(process, None)
            self.media.append(media)
        attempt.ended = time.time()
        attempt.answered = any(path.read_text().count("\n") > 1 for path in folder.glob("*_rtt.csv"))
        return attempt

    async def _post_aml(self, call: Call) -> None:
        """The handset's AML reaches an intake while the call rings; the gateway tries the other site on failure."""
        assert call.aml is not None and self.lab.client is not None
        await asyncio.sleep(0.3)
        for site in (self.lab.route(call.home), other(self.lab.route(call.home))):
            now_ms = str(int(time.time() * 1000))
            form = {"location_latitude": str(call.aml.lat), "location_longitude": str(call.aml.lon),
                    "location_accuracy": "15", "location_source": "gps", "time": now_ms, "location_time": now_ms,
                    "device_number": call.number}  # fmt: skip
            url = f"http://{self.lab.verbund.host(site)}:{self.lab.verbund.ports[site].web}/aml/v1/https"
            call.aml.site = site
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                headers = {"Authorization": f"Bearer {self.lab.verbund.aml_token}"}
                async with self.lab.client.post(url, data=form, headers=headers) as answer:
                    if 200 <= answer.status < 300:
                        call.aml.accepted = True
                        return


# -- the accounting --------------------------------------------------------------------------


@dataclass
class Result:
    drill: str
    calls: int = 0
    answered: int = 0
    abandoned: int = 0  # callers who hung up while waiting
    abandoned_listed: int = 0
    aml_accepted: int = 0
    aml_kept: int = 0
    cards: int = 0
    redialled: int = 0
    lost: int = 0
    degraded_s: float = 0.0
    pop_gap_s: float = 0.0  # the longest time a site's screens got no card, from the fault on
    recover_s: float | None = None
    load_only: bool = False  # the overload drill: calls and their answers only (no desks' cards, callback list, AML)
    misses: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    observed: dict[str, Any] = field(default_factory=dict)  # what the fault and the recovery check noted


async def account(name: str, calls: list[Call], cards: list[dict[str, Any]], store: Store, fault_at: float) -> Result:
    """Each call answered with a card, or on the callback list, exactly once; each accepted AML fix kept."""
    result = Result(drill=name, calls=len(calls))
    listed: dict[str, int] = {}
    for entry in await store.abandoned_calls():
        listed[entry.caller] = listed.get(entry.caller, 0) + 1
    card_of: dict[str, dict[str, Any]] = {}
    for shown in cards:
        card_of.setdefault(shown["caller"], shown)
    impaired: set[str] = set()

    def miss(call: Call, why: str) -> None:
        result.misses.append(f"{call.number} ({call.kind}, {call.home}): {why}")
        impaired.add(call.number)

    for call in calls:
        result.redialled += call.redialled
        if call.redialled:
            impaired.add(call.number)
        card = card_of.get(call.number)
        if call.answered or card is not None:
            result.answered += 1
            await _check_answered(
                call,
                card,
                times_listed=listed.get(call.number, 0),
                store=store,
                result=result,
                miss=miss,
                impaired=impaired,
            )
        elif call.kind == "abandon" and call.attempts and call.attempts[-1].exit_code == 0:
            result.abandoned += 1
            if listed.get(call.number, 0) == 1:
                result.abandoned_listed += 1
            else:
                miss(call, f"abandoned, on the callback list {listed.get(call.number, 0)}x")
        else:
            miss(call, f"neither answered nor abandoned (sipp exit {[a.exit_code for a in call.attempts]})")
        if call.aml is not None and call.aml.accepted:
            result.aml_accepted += 1
            trail = await store.aml_trail(call.number)
            if any(abs(fix.lat - call.aml.lat) < 1e-7 and abs(fix.lon - call.aml.lon) < 1e-7 for fix in trail):
                result.aml_kept += 1
            else:
                miss(call, f"AML accepted at {call.aml.site}, not in the trail")
    result.lost = len(result.misses)
    result.notes = [f"impaired: {sorted(impaired)}"] if impaired else []
    result.degraded_s = _degraded(calls, impaired, fault_at)
    return result


async def _check_answered(
    call: Call,
    card: dict[str, Any] | None,
    *,
    times_listed: int,
    store: Store,
    result: Result,
    miss: Callable[[Call, str], None],
    impaired: set[str],
) -> None:
    """An answered call is not on the callback list and its dispatcher got a card showing what the entry
    site knew: its routing and the caller's PIDF-LO position (unless the entry site did not route it)."""
    if times_listed:
        miss(call, f"answered, yet on the callback list {times_listed}x")
    if card is None:
        miss(call, "answered, no card")
        return
    result.cards += 1
    if await store.load_call(card["call_id"]) is None:  # not routed (FastAGI fallback): nothing known at entry
        impaired.add(call.number)
    elif card.get("routing") is None:
        miss(call, f"card at {card['answered_site']} without the entry site's routing")
    elif call.kind == "pidf" and not any(loc.get("source") == "pidf" for loc in card.get("locations", [])):
        miss(call, f"card at {card['answered_site']} without the caller's PIDF-LO position")


def _degraded(calls: list[Call], impaired: set[str], fault_at: float) -> float:
    """From the fault to the first call that entered after the last impaired one (0: none was impaired)."""
    if not impaired:
        return 0.0
    entries = sorted((call.entered, call.number in impaired) for call in calls)
    last_impaired = max(entered for entered, bad in entries if bad)
    after = [entered for entered, _ in entries if entered > last_impaired]
    return max(0.0, (after[0] if after else entries[-1][0]) - fault_at)


# -- the drills ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Drill:
    name: str
    what: str
    fault: Callable[[DrillLab], Awaitable[None]]
    heal: Callable[[DrillLab], Awaitable[None]] | None  # None: the Verbund heals this fault itself
    recovered: Callable[[DrillLab], Awaitable[bool]]  # polled after the heal (after the fault, if heal is None)
    split_sites: bool = False  # each site in a network namespace of its own (lab/netns.py)
    seats: dict[str, int] = field(default_factory=dict)  # answering desks per site, if not SEATS_PER_SITE
    sizes: dict[str, Load] = field(default_factory=lambda: dict(SIZES))
    # after the accounting: what this drill checks besides (notes in result.observed, misses in result.misses)
    check: Callable[[DrillLab, Store, Burst, Result], Awaitable[None]] | None = None


async def _nothing(_: DrillLab) -> None:
    return None


async def _both_serving(drill_lab: DrillLab) -> bool:
    return all([await drill_lab.serving(site) for site in lab.SITES])


async def _cut_jena_ami(drill_lab: DrillLab) -> None:
    status = await drill_lab.status("jena")
    drill_lab.before["ami_connections"] = status["ami"]["connections"] if status else 0
    cut = drill_lab.cut_ami("jena")
    drill_lab.log(f"  AMI of jena cut: {len(cut.splitlines()) - 1} socket(s) killed")


async def _ami_back(drill_lab: DrillLab) -> bool:
    """Jena's service made a new AMI connection (and both still see each other)."""
    status = await drill_lab.status("jena")
    again = bool(status and status["ami"]["connections"] > drill_lab.before["ami_connections"])
    return again and await _both_serving(drill_lab)


async def _kill_jena_service(drill_lab: DrillLab) -> None:
    drill_lab.before["pid"] = pid = drill_lab.service_pid("jena")
    os.kill(pid, signal.SIGKILL)


async def _hang_jena_service(drill_lab: DrillLab) -> None:
    drill_lab.before["pid"] = pid = drill_lab.service_pid("jena")
    drill_lab.before["gera_saw_jena_gone"] = False
    os.kill(pid, signal.SIGSTOP)  # the supervisor's watchdog kills it (SIGKILL ends a stopped process too)


async def _jena_restarted(drill_lab: DrillLab) -> bool:
    """A new service process of Jena is ready and both sites see each other again; on the way, notes
    whether Gera saw Jena gone (it must stop sending Jena calls then)."""
    gera = await drill_lab.status("gera")
    if gera is not None and not gera["partner"]["reporting"]:
        drill_lab.before["gera_saw_jena_gone"] = True
    events = drill_lab.services["jena"].events.read()
    restarted = any(e["event"] == "ready" and e["pid"] != drill_lab.before["pid"] for e in events)
    return restarted and await _both_serving(drill_lab)


async def _kill_redis_master(drill_lab: DrillLab) -> None:
    """The Redis master dies (kill -9); the failover (the sentinels promote the replica) is timed."""
    redis = drill_lab.verbund.redis
    drill_lab.before["killed"] = killed = redis.master_node().name
    redis.kill(killed)
    await drill_lab.time_failover(killed)


async def _failover_over(drill_lab: DrillLab) -> bool:
    """The failover is over and both services write to the new master again."""
    statuses = [await drill_lab.status(site) for site in lab.SITES]
    return all(status and not status["redis"]["degraded"] for status in statuses) and await _both_serving(drill_lab)


async def _bring_back_redis_node(drill_lab: DrillLab) -> None:
    """The killed node is started again (after the failover: the fault waited for it); the sentinels
    make it a replica of the new master, which the recovery check waits for."""
    await drill_lab.start_redis_node(drill_lab.before["killed"])


async def _redis_whole(drill_lab: DrillLab) -> bool:
    """Every Redis node and sentinel up (the master and its synced replica), and both services serving on it."""
    return await asyncio.to_thread(drill_lab.redis_whole) and await _failover_over(drill_lab)


async def _lose_gera(drill_lab: DrillLab) -> None:
    """Gera's Asterisk, service, Redis node and sentinel die at once (kill -9); the carrier reroutes
    Gera's calls to Jena. If Gera's node was the master, the sentinels of Jena and the witness fail over."""
    redis = drill_lab.verbund.redis
    drill_lab.before["gera_redis_was"] = was = "master" if redis.master() == "gera" else "replica"
    drill_lab.lose_service("gera")
    drill_lab.kill_asterisk("gera")
    redis.kill("gera")
    drill_lab.kill_sentinel("gera")
    await drill_lab.carrier_loses("gera")
    if was == "master":
        await drill_lab.time_failover("gera")


async def _bring_back_gera(drill_lab: DrillLab) -> None:
    await drill_lab.start_redis_node("gera")  # to be a replica of Jena's node (the failover, if any, is over)
    await drill_lab.start_sentinel("gera")
    await drill_lab.start_asterisk("gera")
    await drill_lab.start_service("gera")
    drill_lab.carrier_reaches("gera")


def trunk_calls(site: AsteriskSite) -> dict[str, str]:
    """The site's channels on the inter-site trunk now: channel -> "<direction> <state>" (out: a call this
    site handed to the partner, Dial's outgoing leg; in: one the partner handed here)."""
    calls = {}
    for line in site.cli("core show channels concise").splitlines():
        fields = line.split("!")  # channel, context, exten, priority, state, application, ...
        if len(fields) > 5 and fields[0].startswith(dialplan.INTERSITE_CHANNEL_PREFIX):
            calls[fields[0]] = f"{'out' if fields[5] == 'AppDial' else 'in'} {fields[4]}"
    return calls


def trunk_callers(site: AsteriskSite, channels: dict[str, str]) -> dict[str, str]:
    """The caller number of each trunk channel (an outgoing leg's caller is its connected line)."""
    callers = {}
    for channel, what in channels.items():
        lines = site.cli(f"core show channel {channel}").splitlines()
        shown = {key.strip(): value.strip() for key, _, value in (line.partition(": ") for line in lines)}
        caller = shown.get("Connected Line ID" if what.startswith("out") else "Caller ID", "?")
        callers[caller] = what
    return callers


async def _cut_link(drill_lab: DrillLab) -> None:
    """The inter-site link goes silent at the worst moment: when a call Jena handed over rings at a
    Gera desk (its 200 OK then cannot cross), or after TRUNK_WAIT_S without one. Waits (at most 30 s)
    until both sites show the split to their supervisors (partner not reporting); a watcher notes the
    Redis roles all through the cut."""
    split = drill_lab.split
    assert split is not None
    redis = drill_lab.verbund.redis
    drill_lab.before["master_before"] = redis.master()
    jena = drill_lab.verbund.site("jena")
    deadline = time.monotonic() + TRUNK_WAIT_S
    on_trunk = await asyncio.to_thread(trunk_calls, jena)
    while "out Ringing" not in on_trunk.values() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        on_trunk = await asyncio.to_thread(trunk_calls, jena)
    split.cut()
    drill_lab.before["cut_at"] = cut_at = time.monotonic()
    drill_lab.before["on_trunk_at_cut"] = await asyncio.to_thread(trunk_callers, jena, on_trunk)
    drill_lab.before["link_silent"] = not await asyncio.to_thread(
        split.reaches, "gera", redis.nodes["jena"].place.host, redis.nodes["jena"].port
    )
    drill_lab.watcher = asyncio.create_task(_watch_redis(drill_lab))

    async def split_shown() -> bool:
        statuses = [await drill_lab.status(site) for site in lab.SITES]
        return all(status is not None and not status["partner"]["reporting"] for status in statuses)

    await drill_lab.wait_for(split_shown, 30, "both sites show the partner gone")
    drill_lab.before["split_shown_s"] = round(time.monotonic() - cut_at, 1)
    drill_lab.log(f"  link cut: both sites show the partner gone after {drill_lab.before['split_shown_s']} s")


async def _watch_redis(drill_lab: DrillLab) -> None:
    """Every half second while the link is cut: which nodes call themselves master (a split brain would
    show two), and the roles the sentinels and the nodes report (asked from the root namespace, which
    reaches both sites)."""
    redis = drill_lab.verbund.redis
    seen: dict[str, set[str]] = {"masters_at_once": set(), "sentinels_name": set(), "gera_node": set()}
    drill_lab.before["redis_during_cut"] = seen
    while True:
        roles = await asyncio.to_thread(lambda: {name: node.role() for name, node in redis.nodes.items()})
        seen["masters_at_once"].add(str(sum(role == "master" for role in roles.values())))
        seen["gera_node"].add(roles["gera"])
        seen["sentinels_name"].add(str(await asyncio.to_thread(redis.master)))
        await asyncio.sleep(0.5)


async def _mend_link(drill_lab: DrillLab) -> None:
    """Notes what each site shows at the end of the cut (partner_up, its store), then mends the link
    (not before it was cut for MIN_CUT_S, however long the cut waited for a call on the trunk)."""
    assert drill_lab.split is not None
    await asyncio.sleep(max(0.0, drill_lab.before["cut_at"] + MIN_CUT_S - time.monotonic()))
    for site in lab.SITES:
        status = await drill_lab.status(site)
        up = await asyncio.to_thread(drill_lab.verbund.metric_samples, site, "verbund112_partner_up")
        drill_lab.before[f"{site}_at_cut"] = {
            "partner_up": up[0].value if up else None,
            "partner_reporting": status["partner"]["reporting"] if status else None,
            "store_degraded": status["redis"]["degraded"] if status else None,
        }
    if drill_lab.watcher is not None:
        drill_lab.watcher.cancel()
        await asyncio.gather(drill_lab.watcher, return_exceptions=True)
    drill_lab.before["redis_during_cut"] = {k: sorted(v) for k, v in drill_lab.before["redis_during_cut"].items()}
    drill_lab.split.mend()
    drill_lab.log(f"  link mended; during the cut: {drill_lab.before['redis_during_cut']}")


async def _rejoined(drill_lab: DrillLab) -> bool:
    """Redis whole and both sites seeing each other again; notes how long the Verbund was split (from the cut)."""
    whole = await _redis_whole(drill_lab)
    if whole:
        drill_lab.before.setdefault("split_s", round(time.monotonic() - drill_lab.before["cut_at"], 1))
    return whole


async def _moved_at_most_once(drill_lab: DrillLab, store: Store, burst: Burst, result: Result) -> None:
    """The move ledger after the link came back: every call moved at most once, and answered at one site only.
    The time the Verbund was split counts as degraded (both sites run, but neither sees the other)."""
    result.observed.pop("cut_at", None)
    result.degraded_s = max(result.degraded_s, result.observed.get("split_s", 0.0))
    moves = await store.recent_moves(since=burst.started - 1)
    per_call = collections.Counter(move.call_id for move in moves)
    result.observed["aml_accepted_at"] = dict(
        collections.Counter(call.aml.site for call in burst.calls if call.aml is not None and call.aml.accepted)
    )
    result.observed["moves"] = len(moves)
    result.observed["move_outcomes"] = dict(collections.Counter(move.outcome for move in moves))
    result.misses += [f"call {call_id} moved {n} times" for call_id, n in per_call.items() if n > 1]
    sites_of: dict[str, set[str]] = collections.defaultdict(set)
    for card in drill_lab.screens.cards:
        sites_of[card["caller"]].add(card["answered_site"])
    result.misses += [f"{caller}: cards at {sorted(sites)}" for caller, sites in sites_of.items() if len(sites) > 1]
    # the calls that were on the trunk when it went silent: where each was answered in the end
    calls = {call.number: call for call in burst.calls}
    result.observed["on_trunk_at_cut"] = {
        caller: f"{state} at the cut; " + (
            f"answered, card at {'+'.join(sorted(sites_of[caller]))}" if caller in calls and calls[caller].answered
            else "abandoned" if caller in calls and calls[caller].kind == "abandon" else "not answered"
        )
        for caller, state in drill_lab.before.get("on_trunk_at_cut", {}).items()
    }  # fmt: skip
    result.lost = len(result.misses)


DRILLS = [
    Drill("baseline", "no fault: proves the accounting", _nothing, None, _both_serving),
    Drill(
        "1-redis-master-killed",
        "the Redis master kill -9; the sentinels promote the replica; later the node returns as a replica",
        _kill_redis_master,
        _bring_back_redis_node,
        _redis_whole,
    ),
    Drill(
        "2-jena-killed", "Jena's service kill -9; its supervisor restarts it", _kill_jena_service, None, _jena_restarted
    ),
    Drill(
        "3-jena-hung",
        "Jena's service kill -STOP; FastAGI falls back, the watchdog restarts it",
        _hang_jena_service,
        None,
        _jena_restarted,
    ),
    Drill("4-ami-cut", "Jena's AMI connection cut (ss -K, both ends reset)", _cut_jena_ami, None, _ami_back),
    Drill(
        "5-gera-lost",
        "Gera's Asterisk, service, Redis node and sentinel kill -9; carrier reroutes to Jena",
        _lose_gera,
        _bring_back_gera,
        _redis_whole,
    ),
    Drill(
        "6-link-cut",
        "the inter-site link goes silent while both sites live (each in a network namespace of its own)",
        _cut_link,
        _mend_link,
        _rejoined,
        split_sites=True,
        # Jena short of desks: callers wait there and are moved to Gera, also when the link goes
        seats={"jena": SPLIT_JENA_SEATS},
        # the CI burst is longer than the others': moves are under way when the link goes
        sizes={**SIZES, "ci": Load(rate=2.0, seconds=20)},
        check=_moved_at_most_once,
    ),
]


async def run_drill(drill: Drill, load: Load, log: Callable[[str], None] = print) -> Result:
    number = DRILLS.index(drill) + 1 if drill in DRILLS else 99
    log(f"drill {drill.name}: {drill.what}; {load.calls_per_site} calls per site at {load.rate:g}/s")
    began = time.monotonic()
    async with DrillLab.started(drill, log) as drill_lab:
        # the store as the services reach it (a plain Redis or through the sentinels)
        redis = RedisSettings(**drill_lab.verbund.service_settings("jena")["redis"] | {"timeout": 2.0})
        store = Store(redis, prom.CollectorRegistry())
        burst = Burst(drill_lab, load, number)
        running = asyncio.create_task(burst.run())
        try:
            await asyncio.sleep(load.seconds * FAULT_AT)
            fault_at = time.time()
            await drill.fault(drill_lab)
            if drill.heal is not None:
                await asyncio.sleep(max(0.0, fault_at + load.seconds * (HEAL_AT - FAULT_AT) - time.time()))
                await drill.heal(drill_lab)
            healed_at = time.time() if drill.heal is not None else fault_at
            await drill_lab.wait_for(lambda: drill.recovered(drill_lab), 60, f"{drill.name}: recovered")
            recover_s = time.time() - healed_at
            await running
            result = await _settled(drill, burst, drill_lab, store, fault_at)
            result.recover_s = recover_s if drill.fault is not _nothing else None
            result.observed = dict(drill_lab.before)
            # without a Redis master the services are degraded (no store) even where no call shows it
            result.degraded_s = max(result.degraded_s, drill_lab.before.get("failover_s", 0.0))
            result.pop_gap_s = pop_gap(drill_lab.screens.cards, fault_at, burst.calls)
            if drill.check is not None:
                await drill.check(drill_lab, store, burst, result)
        finally:
            if drill_lab.watcher is not None:
                drill_lab.watcher.cancel()
            running.cancel()  # the calls still up when the drill failed or was stopped: their sipp is killed
            await asyncio.gather(running, return_exceptions=True)
            burst.close()
            await store.close()
    log(f"  {_row(result)} (drill took {time.monotonic() - began:.0f} s)")
    for line in [*result.misses, *result.notes]:
        log(f"    {line}")
    if result.observed:
        log(f"    observed: {result.observed}")
    return result


def pop_gap(cards: list[dict[str, Any]], fault_at: float, calls: list[Call]) -> float:
    """The longest time a site's screens got no card, from the fault to the last answer of the burst
    (under the steady load of 2 calls/s per site a card comes every few tenths of a second)."""
    last_answer = max((a.ended for call in calls for a in call.attempts if a.answered), default=fault_at)
    gaps = []
    for site in lab.SITES:
        arrivals = sorted(
            card["received_at"] for card in cards
            if card["answered_site"] == site and fault_at <= card["received_at"] <= last_answer
        )  # fmt: skip
        gaps += [later - earlier for earlier, later in itertools.pairwise([fault_at, *arrivals])]
    return max(gaps, default=0.0)


async def _settled(drill: Drill, burst: Burst, drill_lab: DrillLab, store: Store, fault_at: float) -> Result:
    """The accounting, once it stops improving: cards, callback entries and AML may trail the calls."""
    deadline = time.monotonic() + SETTLE_S
    while True:
        result = await account(drill.name, burst.calls, drill_lab.screens.cards, store, fault_at)
        if result.lost == 0 or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.5)


# -- the table -------------------------------------------------------------------------------

COLUMNS = ("drill", "calls", "answered", "abandoned listed", "AML kept", "cards", "redialled", "lost",
           "degraded s", "recover s", "pop gap s")  # fmt: skip
LOAD_COLUMNS = ("drill", "calls", "answered", "lost", "degraded s", "recover s")  # what the overload drill measures


def _cells(result: Result) -> list[str]:
    cells = [
        result.drill, str(result.calls), str(result.answered), f"{result.abandoned_listed}/{result.abandoned}",
        f"{result.aml_kept}/{result.aml_accepted}", f"{result.cards}/{result.answered}", str(result.redialled),
        str(result.lost), f"{result.degraded_s:.1f}", "-" if result.recover_s is None else f"{result.recover_s:.1f}",
        f"{result.pop_gap_s:.1f}",
    ]  # fmt: skip
    if result.load_only:
        return [cell if name in LOAD_COLUMNS else "-" for name, cell in zip(COLUMNS, cells, strict=True)]
    return cells


def _row(result: Result) -> str:
    return "  ".join(f"{name}={cell}" for name, cell in zip(COLUMNS, _cells(result), strict=True))


def table(results: list[Result]) -> str:
    rows = [list(COLUMNS), *(_cells(result) for result in results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)) for row in rows)


# -- drill 7, overload (lab/overload.py): a lab and a load of its own ----------------------------

OVERLOAD = "7-overload"
OVERLOAD_NAMES = (OVERLOAD, "overload")  # --only takes either
OVERLOAD_TRIALS = {"full": overload.FULL, "ci": overload.CI}


async def run_overload(size: str, log: Callable[[str], None] = print) -> Result:
    """A burst above what Jena can take, then normal load (lab/overload.py), as a row of the table."""
    log(f"drill {OVERLOAD}: a burst above Jena's knee, then normal load")
    began = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="v112-drill-overload-"))
    measured, knee = await asyncio.to_thread(overload.run, OVERLOAD_TRIALS[size], work, f"drill-overload-{os.getpid()}")
    for line in measured.lines(knee):
        log(f"  {line}")
    result = overload_result(measured)
    log(f"  {_row(result)} (drill took {time.monotonic() - began:.0f} s; sipp's files: {work})")
    for line in result.misses:
        log(f"    {line}")
    return result


def overload_result(measured: overload.DrillResult) -> Result:
    """lost: the normal load's calls that failed after the recovery limit; degraded: the burst;
    recover: from the start of the normal load until every call was answered."""
    late = overload.late_failures(measured)
    result = Result(
        drill=OVERLOAD,
        calls=measured.burst.load.calls + measured.normal.load.calls,
        answered=measured.burst.answered + measured.normal.answered,
        lost=len(late),
        degraded_s=measured.burst.load.seconds,
        recover_s=measured.recovery_s,
        load_only=True,
    )
    result.misses = [
        f"normal-load call {n} failed {measured.normal.started_at(n):.0f} s into the normal load" for n in late
    ]
    if measured.channels_settled or measured.queue_after:
        result.misses.append(
            f"left behind: {measured.queue_after} callers in the queue, {measured.channels_settled} channels "
            f"{measured.settle_s:.0f} s after the normal load"
        )
    return result


async def _run_all(drills: list[Drill], size: str, with_overload: bool) -> list[Result]:
    # SIGTERM (a timeout, scripts/down) cancels the drill, so that its lab is stopped and cleaned up
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, asyncio.current_task().cancel)  # type: ignore[union-attr]
    results = [await run_drill(drill, drill.sizes[size]) for drill in drills]
    return results + ([await run_overload(size)] if with_overload else [])


def main(argv: list[str] | None = None) -> int:
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="full")
    parser.add_argument("--only", choices=[*(drill.name for drill in DRILLS), *OVERLOAD_NAMES], action="append")
    args = parser.parse_args(argv)
    chosen = [drill for drill in DRILLS if not args.only or drill.name in args.only]
    with_overload = not args.only or bool(set(OVERLOAD_NAMES) & set(args.only))
    results = asyncio.run(_run_all(chosen, args.size, with_overload))
    print(table(results))
    return 0 if all(result.lost == 0 and not result.misses for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())
