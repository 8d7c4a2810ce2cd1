"""The local Verbund: Redis (a Sentinel set), Asterisk jena and gera, the services, dispatcher desks.

Used by ``verbund112 lab up/down/status/call`` and by the integration tests,
so the tests run exactly what a newcomer sees. Everything listens on
127.0.0.1; the telephone network's emergency trunk is simulated by sipp from
127.0.0.2 (Linux routes all of 127/8 to loopback), which is the address the
carrier endpoint of each site is matched by. The inter-site trunk is TLS on an
address of each site's own (INTERSITE_ADDRESSES), with certificates of a
throwaway Verbund CA made at each start (lab/pki.py). Drill 6 moves each site into a network
namespace of its own instead (Layout, lab/netns.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import secrets
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from lab import netns, pki, rootfs
from lab.processes import (
    LOOPBACK,
    AsteriskSite,
    LabError,
    Place,
    RedisSentinelSet,
    free_rtp_base,
    free_tcp_port,
    free_udp_port,
    release_rtp_base,
    stop_process,
    tcp_accepts,
    wait_until,
)
from lab.supervisor import SupervisorEvents
from verbund112 import asterisk_config, shipped

REPO = Path(__file__).resolve().parents[1]
SITES = ("jena", "gera")
CARRIER_ADDRESS = "127.0.0.2"
BENCH_DESK_ADDRESS = "127.0.0.3"  # the benchmark's answering peer
# Each site's inter-site TLS transport has an address of its own, so that the partner is
# recognised by its address without taking the desks' (127.0.0.1) with it.
INTERSITE_ADDRESSES = {"jena": "127.0.0.4", "gera": "127.0.0.5"}
SIPP_DIR = Path(__file__).resolve().parent / "sipp"


@dataclass(frozen=True)
class Layout:
    """Where each site's servers listen and run, and where the witness sentinel and the carrier are.

    The default: everything on loopback in this namespace (INTERSITE_ADDRESSES for the trunk).
    Drill 6 puts each site in a network namespace of its own (lab/netns.py, split_layout): a
    site's Asterisk (SIP, AMI, FastAGI target, trunk), service (web, FastAGI), Redis node and
    sentinel listen on the site's address and run in its namespace.
    """

    sites: dict[str, Place] = field(default_factory=lambda: {name: Place() for name in SITES})
    witness: Place = field(default_factory=Place)
    carrier: str = CARRIER_ADDRESS  # the address the carrier's calls come from

    def host(self, site: str) -> str:
        return self.sites[site].host

    def intersite(self, site: str) -> str:
        """The trunk's address: an own one on loopback (so the partner is told from the desks), else the site's."""
        place = self.sites[site]
        return INTERSITE_ADDRESSES[site] if place.netns is None else place.host

    def redis_places(self) -> dict[str, Place]:
        return {**self.sites, "witness": self.witness}


def split_layout(split: netns.SplitSites) -> Layout:
    """Each site in its own namespace on its own address; the witness and the carrier outside both."""
    sites = {name: Place(split.address(name), split.netns(name)) for name in SITES}
    return Layout(sites=sites, witness=Place(split.outside), carrier=split.outside)


# Written into every lab folder: `lab purge` deletes only a folder that carries it.
LAB_MARKER = ".verbund112-lab"


def lab_dir() -> Path:
    # an empty VERBUND112_LAB_DIR means the default, never the current directory
    configured = os.environ.get("VERBUND112_LAB_DIR", "").strip()
    return Path(configured).resolve() if configured else (REPO / ".lab").resolve()


def purge_lab_dir(directory: Path) -> None:
    """Delete a lab folder, refusing anything that is not one (an empty setting once made it
    the current directory, the repository; purge deleted it)."""
    directory = directory.resolve()
    if not (directory / LAB_MARKER).is_file():
        raise LabError(f"{directory} has no {LAB_MARKER}: not a lab folder, not deleted")
    if REPO.resolve().is_relative_to(directory) or (directory / ".git").exists():
        raise LabError(f"{directory} holds the repository: not deleted")
    rootfs.remove_tree(directory)


def instance_name() -> str:
    """Which lab `lab up/down/status/call` mean (several can share one root filesystem)."""
    return os.environ.get("VERBUND112_LAB_INSTANCE", "lab")


@dataclass
class SitePorts:
    sip: int
    ami: int
    fastagi: int
    web: int
    rtp: int
    intersite: int  # TCP port of the TLS trunk, on INTERSITE_ADDRESSES[site]
    neighbour: int  # UDP port on CARRIER_ADDRESS where a neighbour Leitstelle stands in


def _allocate_ports(rtp_ports: int) -> dict[str, SitePorts]:
    taken: set[int] = set()

    def fresh(picker: Callable[[], int]) -> int:
        for _ in range(100):
            port = picker()
            if port not in taken:
                taken.add(port)
                return port
        raise LabError("no free port")

    return {
        name: SitePorts(
            sip=fresh(free_udp_port),
            ami=fresh(free_tcp_port),
            fastagi=fresh(free_tcp_port),
            web=fresh(free_tcp_port),
            rtp=free_rtp_base(rtp_ports),
            intersite=fresh(free_tcp_port),
            neighbour=fresh(_free_carrier_port),
        )
        for name in SITES
    }


@dataclass
class Verbund:
    """Redis (master, replica, three sentinels) and both Asterisk sites of one lab instance."""

    instance: str
    root: Path
    redis: RedisSentinelSet
    sites: dict[str, AsteriskSite]
    ports: dict[str, SitePorts]
    web_token: str
    read_token: str
    aml_token: str
    desk_tokens: dict[str, str]  # dispatcher seat -> its screen-pop token
    rules_file: Path
    certificates: dict[str, pki.SiteCertificate] = field(default_factory=dict)  # the trunk's, per site
    layout: Layout = field(default_factory=Layout)

    def site(self, name: str) -> AsteriskSite:
        return self.sites[name]

    def host(self, name: str) -> str:
        """The address a site's servers (SIP, web, AMI, FastAGI) listen on."""
        return self.layout.host(name)

    def metric_samples(self, site: str, name: str) -> list[Sample]:
        """The samples of one metric (as exposed, e.g. "..._bucket") read from a site's /metrics."""
        url = f"http://{self.host(site)}:{self.ports[site].web}/metrics"
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {self.read_token}"})
        with urllib.request.urlopen(request, timeout=5) as response:
            text = response.read().decode()
        return [s for family in text_string_to_metric_families(text) for s in family.samples if s.name == name]

    def service_settings(self, name: str) -> dict[str, Any]:
        """Settings of the service of one site (secrets included; keep out of files)."""
        site, host = self.sites[name], self.host(name)
        return {
            "site": name,
            "partner": site.values.partner,
            "local_queue": site.values.queue,
            "ami": {
                "host": host,
                "port": site.values.ami_port,
                "username": site.values.ami_username,
                "secret": site.secrets.ami_secret,
                "ping_interval": 1.0,
                "ping_timeout": 1.0,
                "reconnect_max": 1.0,
            },
            "rules_file": str(self.rules_file),
            # Asterisk connects from the site's address; the secret is the one in its verbund112.conf
            "fastagi": {
                "host": host,
                "port": self.ports[name].fastagi,
                "allowed_peers": [host],
                "secret": site.secrets.fastagi_secret,
            },
            "redis": self.redis_settings(),
            "web": {
                "host": host,
                "port": self.ports[name].web,
                "tokens": {
                    self.web_token: {"role": "admin", "name": "lab-admin"},
                    self.read_token: {"role": "read", "name": "lab-reader"},
                    self.aml_token: {"role": "aml", "name": "lab-aml-gateway"},
                    **{token: {"role": "dispatcher", "name": seat} for seat, token in self.desk_tokens.items()},
                },
            },
        }

    def redis_settings(self) -> dict[str, Any]:
        """The services' `redis` section: through the sentinels (passwords included; keep out of files)."""
        return {
            "sentinels": self.redis.sentinel_addresses,
            "master_name": self.redis.master_name,
            "password": self.redis.password,
            "sentinel_password": self.redis.sentinel_password,
        }

    def stop(self) -> None:
        for site in self.sites.values():
            site.stop()
        self.redis.stop()
        for site in self.sites.values():
            subprocess.run(["rm", "-rf", "--one-file-system", str(site.host_dir)], check=False)
        shutil.rmtree(self.redis.workdir.parent, ignore_errors=True)
        if not rootfs_in_use(self.root):
            rootfs.unmount_all(self.root)
        for ports in self.ports.values():
            release_rtp_base(ports.rtp)


def rootfs_in_use(root: Path) -> bool:
    """Does any process run inside this root (another lab instance, say)?"""
    target = str(root.resolve())
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if os.readlink(proc / "root") == target:
                    return True
    return False


# the dialplan's own waits as shipped (asterisk-config SiteValues defaults)
PRODUCTION_WAITS: dict[str, int] = {}
# short waits so that tests and the demo see the static overflow quickly
LAB_WAITS = {"member_ring_s": 8, "local_wait_s": 10, "partner_ring_s": 12, "partner_queue_wait_s": 10}
# RTP ports per site: 200 channels with media, enough for the tests. A bench needs more (at
# 100 calls/s and 1 s of talk 400 ports run out, and Asterisk refuses calls with 488).
LAB_RTP_PORTS = 400
BENCH_RTP_PORTS = 4000


def start_verbund(
    instance: str,
    directory: Path | None = None,
    log: Callable[[str], None] = print,
    *,
    bench: bool = False,
    bench_desks: dict[str, int] | None = None,
    waits: dict[str, int] | None = None,
    rtp_ports: int = LAB_RTP_PORTS,
    layout: Layout | None = None,
) -> Verbund:
    """Build (once) the root filesystem and start Redis and both Asterisk sites.

    bench: each site's queue gets the bench peer (one member answering every
    call, or ``bench_desks[site]`` members of one call each).
    rtp_ports: the width of each site's RTP port range; every channel with media holds
    two ports (RTP and RTCP), a call answered by a desk two channels.
    layout: where the sites' servers listen and run (default: all on loopback, in this namespace).
    """
    layout = layout or Layout()
    directory = directory or lab_dir()
    directory.mkdir(parents=True, exist_ok=True)
    (directory / LAB_MARKER).touch()
    root = directory / "rootfs"
    seconds = rootfs.ensure(root)
    if seconds:
        log(f"built the Asterisk root filesystem in {seconds:.0f} s")
    rootfs.mount(root)
    ports = _allocate_ports(rtp_ports)
    # a throwaway Verbund CA and site certificates at each start: no key is ever committed
    certificates = pki.verbund_pki(directory / instance / "pki", {name: layout.intersite(name) for name in SITES})
    redis = RedisSentinelSet(directory / instance / "redis", places=layout.redis_places())
    sites: dict[str, AsteriskSite] = {}
    try:
        redis.start()
        for name in SITES:
            partner = next(other for other in SITES if other != name)
            inner = f"/srv/verbund112/{instance}/{name}"
            host = layout.host(name)
            values = asterisk_config.load_site(
                name,
                sip_bind_address=host,
                sip_port=ports[name].sip,
                intersite_address=layout.intersite(name),
                intersite_port=ports[name].intersite,
                partner_host=layout.intersite(partner),
                partner_tls_port=ports[partner].intersite,
                intersite_cert_file=f"{inner}/keys/intersite.crt",
                intersite_key_file=f"{inner}/keys/intersite.key",
                intersite_ca_file=f"{inner}/keys/verbund-ca.crt",
                carrier_match=[layout.carrier],
                desk_networks=[f"{LOOPBACK}/32"],  # the pyVoIP desks; other loopback addresses are refused
                ami_bind_address=host,
                ami_permit=[f"{host}/32"],
                ami_port=ports[name].ami,
                rtp_port_start=ports[name].rtp,
                rtp_port_end=ports[name].rtp + rtp_ports - 1,
                fastagi_url=f"agi://{host}:{ports[name].fastagi}",
                carrier_outbound_uri=f"sip:{CARRIER_ADDRESS}:{ports[name].neighbour}",
                **(LAB_WAITS if waits is None else waits),
                bench_desk_uri=f"sip:bench@{BENCH_DESK_ADDRESS}:{ports[name].neighbour + 1}" if bench else None,
                bench_desks=(bench_desks or {}).get(name, 0),
                paths=asterisk_config.AsteriskPaths(
                    etc=f"{inner}/etc", lib=f"{inner}/lib", spool=f"{inner}/spool",
                    run=f"{inner}/run", log=f"{inner}/log", cache=f"{inner}/cache",
                ),
            )  # fmt: skip
            site = AsteriskSite(root, instance, values, asterisk_config.SiteSecrets.generate(values),
                                netns=layout.sites[name].netns)  # fmt: skip
            keys = site.host_dir / "keys"
            keys.mkdir(parents=True, exist_ok=True)
            mine = certificates[name]
            copies = {mine.cert: "intersite.crt", mine.key: "intersite.key", mine.ca: "verbund-ca.crt"}
            for source, target in copies.items():
                shutil.copyfile(source, keys / target)
            (keys / "intersite.key").chmod(0o600)
            site.prepare()  # gives the keys to Asterisk's user
            sites[name] = site
        for site in sites.values():
            site.start()
    except BaseException:
        for site in sites.values():
            site.stop()
        redis.stop()
        raise
    return Verbund(
        instance, root, redis, sites, ports,
        web_token=secrets.token_urlsafe(24), read_token=secrets.token_urlsafe(24), aml_token=secrets.token_urlsafe(24),
        desk_tokens={
            seat: secrets.token_urlsafe(24)
            for site in sites.values()
            for seat in [
                *site.values.dispatchers, *(["bench-desk"] if bench else []),
                *(f"bench-d{i}" for i in range(1, site.values.bench_desks + 1)),  # the bench desks' screens
            ]
        },
        rules_file=lab_rules(directory / instance / "rules"),
        certificates=certificates,
        layout=layout,
    )  # fmt: skip


LAB_NEIGHBOUR = "ils-hochfranken"
LAB_NEIGHBOUR_NUMBER = "+499281112112"


def lab_rules(directory: Path) -> Path:
    """The shipped rules, with a forwarding number for one neighbour (answered by a sipp stand-in)."""
    shutil.rmtree(directory, ignore_errors=True)
    shutil.copytree(shipped.rules_dir(), directory, ignore=shutil.ignore_patterns("__init__.py", "__pycache__"))
    path = directory / "verbund112.yaml"
    text = path.read_text()
    old = 'ils-hochfranken:   {name: "ILS Hochfranken (Hof)"}'
    if old not in text:
        raise LabError("rules/verbund112.yaml changed: the lab cannot give ils-hochfranken its lab number")
    path.write_text(
        text.replace(old, f'ils-hochfranken:   {{name: "ILS Hochfranken (Hof)", number: "{LAB_NEIGHBOUR_NUMBER}"}}')
    )
    return path


def neighbour_uas(
    site: AsteriskSite, port: int, message_file: Path, timeout_s: int = 120, *, hangs_up: bool = False
) -> subprocess.Popen[bytes]:
    """A sipp UAS on the carrier address standing in for a Leitstelle outside the Verbund.

    hangs_up: it answers and hangs up 2 s later (an intercept announcement, a wrong number).
    """
    scenario = SIPP_DIR / ("neighbour_uas_hangs_up.xml" if hangs_up else "neighbour_uas.xml")
    args = [
        "sipp", "-sf", str(scenario), "-i", CARRIER_ADDRESS, "-p", str(port),
        "-m", "1", "-trace_msg", "-message_file", str(message_file), "-timeout", f"{timeout_s}s",
        "-timeout_error", "-nostdin", "-nd", "-mp", str(free_rtp_base(10, hold_s=timeout_s + 5)),
        f"{LOOPBACK}:{site.values.sip_port}",
    ]  # fmt: skip
    # one call: the tests read its complaints when it ends (communicate)
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO)


def bench_desk(site: AsteriskSite, timeout_s: int, media: int | None = None) -> subprocess.Popen[bytes]:
    """The benchmark lab's answering peer: answers every call the queue offers, for timeout_s.
    media: its RTP range, held by the caller (who gives it back); else one held for timeout_s."""
    assert site.values.bench_desk_uri is not None
    port = site.values.bench_desk_uri.rsplit(":", 1)[1]
    media = free_rtp_base(10, hold_s=timeout_s + 5) if media is None else media
    args = [
        "sipp", "-sf", str(SIPP_DIR / "neighbour_uas.xml"), "-i", BENCH_DESK_ADDRESS, "-p", port,
        "-timeout", f"{timeout_s}s", "-nostdin", "-nd", "-mp", str(media), f"{LOOPBACK}:{site.values.sip_port}",
    ]  # fmt: skip
    # its complaints go to a file: a pipe nobody reads fills up in a long run past the knee,
    # and then sipp blocks on writing to it and answers nothing more
    with (site.host_dir / "log" / f"bench-desk-{port}.log").open("ab") as errors:
        return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=errors, cwd=REPO)


class Desks:
    """A dispatcher-desk process (pyVoIP) for one site; its JSON lines can be awaited."""

    def __init__(
        self,
        site: AsteriskSite,
        seats: list[str],
        log_file: Path | None = None,
        *,
        address: str = LOOPBACK,
        passwords: dict[str, str] | None = None,
    ) -> None:
        """address: the desks' own (another loopback address is outside the lab's desk networks);
        passwords: instead of the seats' real ones."""
        self.site = site
        self.seats = seats
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        args = [sys.executable, "-m", "lab.desks", "--server", f"{LOOPBACK}:{site.values.sip_port}"]
        args += ["--address", address]
        self.media = [free_rtp_base(100) for _ in seats]
        for seat, media in zip(seats, self.media, strict=True):
            password = (passwords or site.secrets.dispatcher_passwords)[seat]
            args += ["--seat", f"{seat}:{password}:{free_udp_port()}:{media}"]
        with contextlib.ExitStack() as stack:
            out = stack.enter_context(log_file.open("wb")) if log_file else subprocess.PIPE
            self.process = subprocess.Popen(
                args, stdout=out, stderr=subprocess.DEVNULL if log_file else None, cwd=REPO, start_new_session=True
            )
        if log_file is None:
            threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                self.events.put(json.loads(line))
            except ValueError:
                sys.stderr.write(f"desk: {line.decode(errors='replace')}")  # pyVoIP's own prints

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any]:
        """The first event (seen before or arriving within timeout) that matches."""
        for event in self.seen:
            if predicate(event):
                return event
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LabError(
                    f"desks of {self.site.values.name}: no matching event within {timeout} s; saw {self.seen}"
                )
            try:
                event = self.events.get(timeout=remaining)
            except queue.Empty:
                continue
            self.seen.append(event)
            if predicate(event):
                return event

    def drain(self) -> list[dict[str, Any]]:
        """Every event so far (those not yet awaited included)."""
        while True:
            try:
                self.seen.append(self.events.get_nowait())
            except queue.Empty:
                return list(self.seen)

    def wait_registered(self, timeout: float = 15.0) -> None:
        ready = self.wait_for(lambda e: e.get("event") in ("ready",), timeout)
        failed = [e for e in self.seen if e.get("event") == "register_failed"]
        if failed or set(ready.get("seats", [])) != set(self.seats):
            raise LabError(f"desks failed to register: {failed}; Asterisk said:\n{self._asterisk_about_seats()}")
        # Asterisk's queue sees a desk only once its device state says so.
        wait_until(self.all_available, 10, "desks available in the queue")

    def _asterisk_about_seats(self) -> str:
        """What Asterisk logged and shows about these seats: why a registration failed."""
        lines = []
        for name in ("messages.log", "security.log"):
            with contextlib.suppress(OSError):
                text = (self.site.host_dir / "log" / name).read_text(errors="replace")
                lines += [line for line in text.splitlines() if any(seat in line for seat in self.seats)][-10:]
        for seat in self.seats:
            lines.append(self.site.cli(f"pjsip show aor {seat}"))
        return "\n".join(lines)

    def all_available(self) -> bool:
        shown = self.site.cli(f"queue show {self.site.values.queue}")
        return all(any(seat in line and "Not in use" in line for line in shown.splitlines()) for seat in self.seats)

    def stop(self) -> None:
        stop_process(self.process.pid, timeout=5)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=1)
        if self.process.stdout is not None:
            self.process.stdout.close()
        for media in self.media:
            release_rtp_base(media)


def sipp_call(
    sip_port: int,
    caller: str,
    *,
    talk_ms: int = 1000,
    position: tuple[float, float, float] | None = None,
    shape_xml: str | None = None,
    timeout_s: int = 120,
    uui: str = "0123456789ABCDEF",
    hang_up_after_ms: int | None = None,
    log_dir: Path | None = None,
    clir: bool = False,
) -> subprocess.Popen[bytes]:
    """Place one 112 call into a site's SIP port as the telephone network's emergency trunk would.

    clir: the caller withholds their number (From anonymous, Privacy: id; the number in PAI).
    """
    if position is not None:
        shape_xml = pidf_circle(*position)
    scenario = SIPP_DIR / ("carrier_112_pidf.xml" if shape_xml else "carrier_112.xml")
    if clir:
        scenario = SIPP_DIR / "carrier_112_clir.xml"
    if hang_up_after_ms is not None:  # the caller gives up before anyone answers
        scenario, talk_ms = SIPP_DIR / "carrier_112_abandon.xml", hang_up_after_ms
    args = [
        "sipp", f"{LOOPBACK}:{sip_port}", "-sf", str(scenario),
        "-i", CARRIER_ADDRESS, "-p", str(_free_carrier_port()), "-m", "1",
        "-key", "caller", caller, "-key", "uui", uui, "-d", str(talk_ms),
        "-timeout", f"{timeout_s}s", "-timeout_error", "-nostdin", "-nd",
        "-mp", str(free_rtp_base(10, hold_s=timeout_s + 5)),
    ]  # fmt: skip
    if shape_xml:
        args += ["-key", "shape", shape_xml]
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        args += ["-trace_err", "-error_file", str(log_dir / f"sipp-{caller.lstrip('+')}-errors.log")]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO)


SRS = 'srsName="urn:ogc:def:crs:EPSG::4326"'


def pidf_circle(lat: float, lon: float, radius_m: float) -> str:
    """A PIDF-LO Circle on one line (a sipp key cannot hold a line break)."""
    return (
        f"<gs:Circle {SRS}><gml:pos>{lat:.6f} {lon:.6f}</gml:pos>"
        f'<gs:radius uom="urn:ogc:def:uom:EPSG::9001">{radius_m:.0f}</gs:radius></gs:Circle>'
    )


def pidf_polygon(points: list[tuple[float, float]]) -> str:
    pos_list = " ".join(f"{lat:.6f} {lon:.6f}" for lat, lon in [*points, points[0]])
    return (
        f"<gml:Polygon {SRS}><gml:exterior><gml:LinearRing><gml:posList>{pos_list}</gml:posList>"
        "</gml:LinearRing></gml:exterior></gml:Polygon>"
    )


def pidf_ellipse(lat: float, lon: float, major_m: float, minor_m: float, orientation_deg: float) -> str:
    metres = 'uom="urn:ogc:def:uom:EPSG::9001"'
    return (
        f"<gs:Ellipse {SRS}><gml:pos>{lat:.6f} {lon:.6f}</gml:pos>"
        f"<gs:semiMajorAxis {metres}>{major_m:.0f}</gs:semiMajorAxis>"
        f"<gs:semiMinorAxis {metres}>{minor_m:.0f}</gs:semiMinorAxis>"
        f'<gs:orientation uom="urn:ogc:def:uom:EPSG::9102">{orientation_deg:.0f}</gs:orientation></gs:Ellipse>'
    )


def _free_carrier_port(address: str = CARRIER_ADDRESS) -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


# -- the long-running lab of `verbund112 lab up` -----------------------------


@dataclass
class LabState:
    """What `lab up` started; written to <lab dir>/lab.json (mode 0600: it holds tokens)."""

    instance: str
    redis: dict[str, Any]  # sentinels and master name (the passwords are in the services' environment only)
    sites: dict[str, dict[str, Any]]
    processes: list[dict[str, Any]] = field(default_factory=list)
    tokens: dict[str, str] = field(default_factory=dict)

    @classmethod
    def path(cls) -> Path:
        return lab_dir() / f"{instance_name()}.json"

    def save(self) -> Path:
        path = self.path()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(json.dumps(self.__dict__, indent=2) + "\n")
        return path

    @classmethod
    def load(cls) -> LabState | None:
        path = cls.path()
        if not path.is_file():
            return None
        return cls(**json.loads(path.read_text()))


def _service_launch(verbund: Verbund, name: str, directory: Path) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of `verbund112 serve` for one site: settings in a file
    without secrets, the secrets in the environment (as the systemd unit's EnvironmentFile)."""
    secret_free, secrets = split_secrets(verbund.service_settings(name))
    config = directory / f"{name}-service.yaml"
    config.write_text(yaml.safe_dump(secret_free, sort_keys=False))
    env = {**os.environ, **secrets, "VERBUND112_LOG__FORMAT": "console"}
    return [sys.executable, "-m", "verbund112", "serve", "--config", str(config)], env


# (section, field) -> the variable that carries it; a secrets folder names its files so, in lower case
SECRET_SETTINGS = {
    ("ami", "secret"): "VERBUND112_AMI__SECRET",
    ("web", "tokens"): "VERBUND112_WEB__TOKENS",
    ("fastagi", "secret"): "VERBUND112_FASTAGI__SECRET",
    ("redis", "password"): "VERBUND112_REDIS__PASSWORD",
    ("redis", "sentinel_password"): "VERBUND112_REDIS__SENTINEL_PASSWORD",
}


def split_secrets(settings: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """A service's settings without its secrets (for a settings file), and the secrets as VERBUND112_*
    variables (for the environment or a secrets folder)."""
    secret_free = {key: dict(value) if isinstance(value, dict) else value for key, value in settings.items()}
    secrets = {}
    for (section, key), variable in SECRET_SETTINGS.items():
        value = secret_free[section].pop(key)
        secrets[variable] = value if isinstance(value, str) else json.dumps(value)
    return secret_free, secrets


def _ready(verbund: Verbund, name: str) -> bool:
    """/readyz says 200: AMI logged in, FastAGI listening, rules loaded."""
    try:
        url = f"http://{verbund.host(name)}:{verbund.ports[name].web}/readyz"
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except (OSError, ValueError):
        return False


def _start_service(
    verbund: Verbund, name: str, directory: Path, *, python: str = sys.executable, checkout: Path = REPO
) -> subprocess.Popen[bytes]:
    """The service of one site without a supervisor (the bench measures this process); `python` and
    `checkout`: another checkout's code (lab.profile's side-by-side comparison)."""
    command, env = _service_launch(verbund, name, directory)
    with (directory / f"{name}-service.log").open("wb") as log_file:  # a new lab, a new log
        process = subprocess.Popen(
            verbund.layout.sites[name].command([python, *command[1:]]), stdout=log_file, stderr=subprocess.STDOUT,
            env=env, cwd=checkout, start_new_session=True,
        )  # fmt: skip
    wait_until(lambda: _ready(verbund, name), 30, f"service {name}", process)
    return process


# The lab's watchdog: pings every 2 s; an event loop that does not run for 4 s is killed and
# restarted (production: WatchdogSec in deploy/systemd/verbund112@.service)
LAB_WATCHDOG_S = 4.0


@dataclass
class SupervisedService:
    """`verbund112 serve` of one site under the lab's supervisor (lab/supervisor.py)."""

    site: str
    supervisor: subprocess.Popen[bytes]
    events: SupervisorEvents
    log_file: Path

    @property
    def pid(self) -> int | None:
        """The service process running now (it changes at each restart)."""
        return self.events.current_pid()

    def stop(self) -> None:
        stop_supervisor(self.supervisor.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.supervisor.wait(timeout=1)


def start_supervised_service(
    verbund: Verbund, name: str, directory: Path, *, watchdog_s: float = LAB_WATCHDOG_S, timeout: float = 30.0
) -> SupervisedService:
    """Start a site's service as systemd would (notify socket, watchdog, restarts); returns once
    it said READY=1 and /readyz answers 200."""
    command, env = _service_launch(verbund, name, directory)
    events_file, log_file = directory / f"{name}-supervisor.jsonl", directory / f"{name}-service.log"
    for stale in (events_file, log_file):  # a new lab, a new log
        stale.unlink(missing_ok=True)
    # abstract: no file to clean up, and no limit from the depth of the lab folder (108 bytes)
    notify_socket = f"@verbund112-{name}-{secrets.token_hex(8)}"
    process = subprocess.Popen(  # in the site's namespace: the notify socket is abstract, so per namespace
        verbund.layout.sites[name].command([
            sys.executable, "-m", "lab.supervisor", "--events", str(events_file), "--socket", notify_socket,
            "--log", str(log_file), "--watchdog", str(watchdog_s), "--", *command,
        ]),
        env=env, cwd=REPO, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    service = SupervisedService(name, process, SupervisorEvents(events_file), log_file)
    try:
        wait_until(lambda: any(e["event"] == "ready" for e in service.events.read()), timeout, f"service {name}",
                   process)  # fmt: skip
        wait_until(lambda: _ready(verbund, name), timeout, f"service {name} ready", process)
    except BaseException:
        service.stop()
        raise
    return service


def stop_supervisor(pid: int) -> None:
    """Stop a supervisor (it stops its service first); then a service of it still left, had the
    supervisor itself been killed (the service stays in the supervisor's process group)."""
    if _is_ours(pid, "lab.supervisor"):
        stop_process(pid, timeout=20)
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):
            if proc.name.isdigit() and os.getpgid(int(proc.name)) == pid and _is_ours(int(proc.name), "verbund112"):
                stop_process(int(proc.name), timeout=20)


def up(seats_per_site: int = 2, log: Callable[[str], None] = print) -> LabState:
    """Start the whole Verbund and leave it running; returns what `lab status` shows."""
    if LabState.load() is not None:
        raise LabError(f"a lab is already up ({LabState.path()}); run `verbund112 lab down` first")
    started = time.monotonic()
    instance = instance_name()
    verbund = start_verbund(instance, log=log)
    directory = lab_dir() / instance
    directory.mkdir(parents=True, exist_ok=True)
    processes: list[dict[str, Any]] = [
        *({"role": f"redis-{n}", "pid": r.pid, "marker": "redis-server"} for n, r in verbund.redis.nodes.items()),
        *({"role": f"sentinel-{n}", "pid": r.pid, "marker": "sentinel"} for n, r in verbund.redis.sentinels.items()),
        *({"role": f"asterisk-{n}", "pid": s.pid, "marker": "asterisk"} for n, s in verbund.sites.items()),
    ]
    state = LabState(
        instance=instance,
        redis={
            "sentinels": verbund.redis.sentinel_addresses,
            "master_name": verbund.redis.master_name,
            "nodes": {name: node.port for name, node in verbund.redis.nodes.items()},
        },
        sites={},
        processes=processes,
        tokens={
            "admin": verbund.web_token,
            "read": verbund.read_token,
            "aml": verbund.aml_token,
            **{f"desk {seat}": token for seat, token in verbund.desk_tokens.items()},
        },
    )
    try:
        for name, site in verbund.sites.items():
            service = start_supervised_service(verbund, name, directory)
            processes.append({"role": f"service-{name}", "pid": service.supervisor.pid, "marker": "lab.supervisor"})
            desks = Desks(site, site.values.dispatchers[:seats_per_site], log_file=directory / f"{name}-desks.log")
            processes.append({"role": f"desks-{name}", "pid": desks.process.pid, "marker": "lab.desks"})
            wait_until(desks.all_available, 30, f"desks of {name}", desks.process)
            state.sites[name] = {
                "carrier_sip": f"{CARRIER_ADDRESS} -> {LOOPBACK}:{site.values.sip_port}",
                "sip_port": site.values.sip_port,
                "ami_port": site.values.ami_port,
                "fastagi_port": verbund.ports[name].fastagi,
                "web_url": f"http://{LOOPBACK}:{verbund.ports[name].web}",
                "queue": site.values.queue,
                "asterisk_dir": str(site.host_dir),
                "desks": site.values.dispatchers[:seats_per_site],
                "service_log": str(service.log_file),
                "service_events": str(service.events.path),
                "desks_log": str(directory / f"{name}-desks.log"),
            }
    except BaseException:
        state.save()
        down(log=log)
        raise
    path = state.save()
    log(f"lab up in {time.monotonic() - started:.1f} s; endpoints in {path}")
    return state


def down(log: Callable[[str], None] = print) -> None:
    """Stop everything `lab up` started; leaves no process, mount or port behind."""
    state = LabState.load()
    directory = lab_dir()
    if state is not None:
        # services and desks first, so nothing reconnects to what we stop next
        for process in sorted(state.processes, key=lambda p: p["role"].startswith(("redis", "sentinel", "asterisk"))):
            if process["marker"] == "lab.supervisor":
                stop_supervisor(process["pid"])  # its service too, even if the supervisor was killed
            elif _is_ours(process["pid"], process["marker"]):
                stop_process(process["pid"], timeout=15)
        LabState.path().unlink()
    root = directory / "rootfs"
    subprocess.run(["rm", "-rf", "--one-file-system", str(root / "srv/verbund112" / instance_name())], check=False)
    if root.exists() and not rootfs_in_use(root):
        rootfs.unmount_all(root)
    if state is not None:
        for site in state.sites.values():
            for port in (site["ami_port"], site["fastagi_port"], int(site["web_url"].rsplit(":", 1)[1])):
                if tcp_accepts(port):
                    raise LabError(f"port {port} still open after lab down")
    log("lab down: no lab process, mount or port left")


def _is_ours(pid: int, marker: str) -> bool:
    try:
        return marker in Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return False
