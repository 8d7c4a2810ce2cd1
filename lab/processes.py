"""The lab's server processes: the Redis Sentinel set and the Asterisk instances.

Everything listens on 127.0.0.1 on free ports. Each class starts its process,
waits until it really serves (no sleep-and-hope) and stops it without leaving
a process or a port behind.
"""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from lab import rootfs
from lab.pki import SiteCertificate
from verbund112 import asterisk_config

LOOPBACK = "127.0.0.1"


class LabError(RuntimeError):
    pass


@dataclass(frozen=True)
class Place:
    """Where a lab server runs: the address it listens on (and is reached by), and the network
    namespace it runs in (None: the root namespace; lab/netns.py builds the others for drill 6)."""

    host: str = LOOPBACK
    netns: str | None = None

    def command(self, args: list[str]) -> list[str]:
        """``args`` run in this place's namespace (ip netns exec execs them: the pid stays theirs)."""
        return ["ip", "netns", "exec", self.netns, *args] if self.netns else args


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


# RTP ranges handed out by this process: a range is free when checked but bound only later
# (Asterisk binds its range call by call), so a second caller could be given an overlapping one.
# Each is held until released or, for a process with a time limit (sipp's -timeout), until then:
# a whole test run hands out far more ports than there are below the ephemeral ones.
_RTP_LEASES: dict[int, tuple[int, float | None]] = {}  # base -> (end, held until (monotonic) or None)
_RTP_LOCK = threading.Lock()
_RTP_FIRST, _RTP_LAST = 10000, 32000  # below the kernel's ephemeral ports (32768 and up)


def free_rtp_base(width: int, hold_s: float | None = None) -> int:
    """An even port with `width` free UDP ports above it (RTP needs even ports), not overlapping
    any range this process holds; held until release_rtp_base() or, with hold_s, that long."""
    with _RTP_LOCK:
        now = time.monotonic()
        for base, (_, until) in list(_RTP_LEASES.items()):
            if until is not None and until <= now:
                del _RTP_LEASES[base]
        candidates = range(_RTP_FIRST, _RTP_LAST - width, 2)
        start = random.randrange(len(candidates))
        for index in range(len(candidates)):  # every even base once, from a random one
            base = candidates[(start + index) % len(candidates)]
            if any(base < end and held < base + width for held, (end, _) in _RTP_LEASES.items()):
                continue
            if all(_udp_free(port) for port in range(base, base + width)):
                _RTP_LEASES[base] = (base + width, None if hold_s is None else now + hold_s)
                return base
    raise LabError("no free RTP port range")


def release_rtp_base(base: int) -> None:
    """The range's processes have ended: it may be handed out again."""
    with _RTP_LOCK:
        _RTP_LEASES.pop(base, None)


def _udp_free(port: int, address: str = "") -> bool:
    """Free on every address (the wildcard bind fails if any address holds the port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((address, port))
        except OSError:
            return False
        return True


def tcp_accepts(port: int, host: str = LOOPBACK) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def wait_until(
    condition: Callable[[], bool],
    timeout: float,
    what: str,
    process: subprocess.Popen | None = None,  # type: ignore[type-arg]
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if process is not None and process.poll() is not None:
            raise LabError(f"{what}: process exited with {process.returncode}")
        time.sleep(0.05)
    raise LabError(f"{what}: not ready within {timeout} s")


def stop_process(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after timeout. Quiet if the process is gone."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    while _alive(pid):
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        finished, _ = os.waitpid(pid, os.WNOHANG)
        if finished == pid:
            return False
    except ChildProcessError:
        pass  # not our child: fall back to probing
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie of another parent still "exists"; treat it as gone.
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
            return False
    return True


def _reap(process: subprocess.Popen | None) -> None:  # type: ignore[type-arg]
    if process is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=1)


def tls_lines(tls: SiteCertificate | None, port: int, auth_clients: str = "yes") -> list[str]:
    """redis.conf lines: plain ``port``, or TLS only (``port 0``; replication over TLS too, no cluster)."""
    if tls is None:
        return [f"port {port}"]
    return [
        "port 0", f"tls-port {port}", f"tls-cert-file {tls.cert}", f"tls-key-file {tls.key}",
        f"tls-ca-cert-file {tls.ca}", f"tls-auth-clients {auth_clients}", "tls-replication yes", "tls-cluster no",
    ]  # fmt: skip


def tls_client_options(tls: SiteCertificate | None) -> dict[str, Any]:
    """redis-py's connection options for a process of the lab's Redis (none without TLS)."""
    if tls is None:
        return {}
    return {"ssl": True, "ssl_ca_certs": str(tls.ca), "ssl_certfile": str(tls.cert), "ssl_keyfile": str(tls.key)}


@dataclass
class RedisServer:
    """A plain redis-server on loopback, no persistence, no password (the store's tests of `redis.url`).

    With ``tls``: TLS only (``rediss://``); a client certificate is checked if one is shown.
    """

    workdir: Path
    port: int = 0
    tls: SiteCertificate | None = None
    pid: int = 0
    process: subprocess.Popen | None = None  # type: ignore[type-arg]

    @property
    def url(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://{LOOPBACK}:{self.port}/0"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_tcp_port()
        lines = [
            f"bind {LOOPBACK}", *tls_lines(self.tls, self.port, auth_clients="optional"), 'save ""', "appendonly no",
            "daemonize no", f"dir {self.workdir}", "protected-mode yes",
        ]  # fmt: skip
        config = self.workdir / "redis.conf"
        config.write_text("\n".join(lines) + "\n")
        with (self.workdir / "redis.log").open("ab") as log_file:
            process = subprocess.Popen(
                ["redis-server", str(config)], stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.process = process
        self.pid = process.pid
        wait_until(self._answers_ping, 10, "redis-server", process)

    def _answers_ping(self) -> bool:
        with contextlib.suppress(redis.RedisError, OSError), redis.Redis(
            host=LOOPBACK, port=self.port, socket_timeout=0.5, socket_connect_timeout=0.5,
            **tls_client_options(self.tls),
        ) as client:  # fmt: skip
            return bool(client.ping())
        return False

    def stop(self) -> None:
        if self.pid:
            stop_process(self.pid)
            _reap(self.process)
            self.pid = 0


REDIS_MASTER_NAME = "verbund112"  # the name the sentinels monitor the Verbund's Redis by
REDIS_NODES = ("jena", "gera")  # a redis-server at each site; the first starts as the master
SENTINELS = ("jena", "gera", "witness")  # quorum 2: the loss of either site leaves a majority
# the holders of certificates in a TLS set (lab/pki.py redis_pki)
REDIS_TLS_HOLDERS = (*(f"redis-{node}" for node in REDIS_NODES), *(f"sentinel-{name}" for name in SENTINELS))


def _private_file(path: Path, text: str) -> None:
    """A file that holds a password: readable by its owner only, from the first byte."""
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(text)


@dataclass
class RedisNode:
    """One redis-server of the Sentinel set, on loopback, no persistence, password required."""

    name: str
    workdir: Path
    password: str
    port: int = 0
    replica_of: tuple[str, int] | None = None  # at the first start only: the master's host and port
    tls: SiteCertificate | None = None  # TLS only (port 0, tls-port, replication over TLS)
    place: Place = field(default_factory=Place)
    pid: int = 0
    process: subprocess.Popen | None = None  # type: ignore[type-arg]

    @property
    def url(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://:{self.password}@{self.place.host}:{self.port}/0"

    def client(self, timeout: float = 1.0) -> redis.Redis:
        return redis.Redis(host=self.place.host, port=self.port, password=self.password, socket_timeout=timeout,
                           socket_connect_timeout=timeout, **tls_client_options(self.tls))  # fmt: skip

    def start(self) -> None:
        """Start with the configuration it was first given (a restarted master comes back as a
        master; the sentinels make it a replica)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_tcp_port()
        config = self.workdir / "redis.conf"
        if not config.exists():
            lines = [
                f"bind {self.place.host}", *tls_lines(self.tls, self.port), "protected-mode yes", 'save ""',
                "appendonly no", "daemonize no", f"dir {self.workdir}", f"requirepass {self.password}",
                f"masterauth {self.password}",
            ]  # fmt: skip
            if self.replica_of:
                lines.append("replicaof {} {}".format(*self.replica_of))
            _private_file(config, "\n".join(lines) + "\n")
        with (self.workdir / "redis.log").open("ab") as log_file:
            process = subprocess.Popen(
                self.place.command(["redis-server", str(config)]),
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.process = process
        self.pid = process.pid
        wait_until(self._answers_ping, 10, f"redis-server {self.name}", process)

    def _answers_ping(self) -> bool:
        with contextlib.suppress(redis.RedisError, OSError), self.client(0.5) as client:
            return bool(client.ping())
        return False

    def role(self) -> str:
        """master, slave (a replica with its link to the master up), syncing, or down."""
        try:
            with self.client() as client:
                info = client.info("replication")
        except (redis.RedisError, OSError):
            return "down"
        if info.get("role") == "slave" and info.get("master_link_status") != "up":
            return "syncing"
        return str(info.get("role"))

    def kill(self) -> None:
        """kill -9: the node dies at once, as in a power cut (its data is gone: no persistence)."""
        if self.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            _reap(self.process)
            self.pid = 0

    def stop(self) -> None:
        if self.pid:
            stop_process(self.pid)
            _reap(self.process)
            self.pid = 0


@dataclass
class SentinelProcess:
    """One redis-sentinel (Debian's redis-sentinel package: redis-server in sentinel mode)."""

    name: str
    workdir: Path
    password: str  # the sentinels' own
    port: int = 0
    tls: SiteCertificate | None = None  # TLS only, to clients, the other sentinels and the nodes
    place: Place = field(default_factory=Place)
    pid: int = 0
    process: subprocess.Popen | None = None  # type: ignore[type-arg]

    @property
    def address(self) -> str:
        return f"{self.place.host}:{self.port}"

    def client(self, timeout: float = 1.0) -> redis.Redis:
        return redis.Redis(host=self.place.host, port=self.port, password=self.password, socket_timeout=timeout,
                           socket_connect_timeout=timeout, decode_responses=True,
                           **tls_client_options(self.tls))  # fmt: skip

    def start(
        self, master_port: int, node_password: str, down_after_ms: int, failover_timeout_ms: int,
        master_host: str = LOOPBACK,
    ) -> None:  # fmt: skip
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_tcp_port()
        config = self.workdir / "sentinel.conf"  # the sentinel rewrites it with what it learns
        if not config.exists():
            lines = [
                f"bind {self.place.host}", *tls_lines(self.tls, self.port), "protected-mode yes", "daemonize no",
                f"dir {self.workdir}", f"requirepass {self.password}", f"sentinel sentinel-pass {self.password}",
                # what the other sentinels reach it by (in a namespace of its own, lab/netns.py)
                *([f"sentinel announce-ip {self.place.host}"] if self.place.netns else []),
                f"sentinel monitor {REDIS_MASTER_NAME} {master_host} {master_port} 2",
                f"sentinel auth-pass {REDIS_MASTER_NAME} {node_password}",
                f"sentinel down-after-milliseconds {REDIS_MASTER_NAME} {down_after_ms}",
                f"sentinel failover-timeout {REDIS_MASTER_NAME} {failover_timeout_ms}",
                f"sentinel parallel-syncs {REDIS_MASTER_NAME} 1",
            ]  # fmt: skip
            _private_file(config, "\n".join(lines) + "\n")
        with (self.workdir / "sentinel.log").open("ab") as log_file:
            process = subprocess.Popen(
                self.place.command([*_sentinel_program(), str(config)]),
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.process = process
        self.pid = process.pid
        wait_until(self._answers_ping, 10, f"redis-sentinel {self.name}", process)

    def _answers_ping(self) -> bool:
        with contextlib.suppress(redis.RedisError, OSError), self.client(0.5) as client:
            return bool(client.ping())
        return False

    def master_state(self) -> dict[str, Any] | None:
        """What this sentinel knows of the master (SENTINEL MASTER), None if it does not answer."""
        try:
            with self.client() as client:
                return dict(client.sentinel_master(REDIS_MASTER_NAME))
        except (redis.RedisError, OSError):
            return None

    def stop(self) -> None:
        if self.pid:
            stop_process(self.pid)
            _reap(self.process)
            self.pid = 0


def _sentinel_program() -> list[str]:
    # Debian's redis-sentinel package (scripts/bootstrap); redis-server --sentinel is the same program
    return ["redis-sentinel"] if shutil.which("redis-sentinel") else ["redis-server", "--sentinel"]


@dataclass
class RedisSentinelSet:
    """The Verbund's Redis as in production, on loopback: a master ("jena"), a replica ("gera")
    and three sentinels ("jena", "gera", "witness"; quorum 2), each on a port of its own.

    Passwords are made at each start (``requirepass``/``masterauth`` on the nodes, the
    sentinels' own). Tests and drills kill the master, ask which node is master now and
    restart a killed node, which the sentinels turn into a replica.

    With ``tls`` (certificates by holder: ``redis-<node>``, ``sentinel-<name>``; lab/pki.py
    redis_pki) every node and sentinel speaks TLS only, with client certificates required,
    replication and the sentinels' links included. The lab's default set is plain (faster).
    """

    workdir: Path
    down_after_ms: int = 1000  # a dead master is noticed this soon...
    failover_timeout_ms: int = 5000  # ...and a failover that got stuck is tried again after this
    tls: dict[str, SiteCertificate] | None = None
    places: dict[str, Place] = field(default_factory=dict)  # by node and sentinel name; default: loopback
    password: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    sentinel_password: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    nodes: dict[str, RedisNode] = field(default_factory=dict)
    sentinels: dict[str, SentinelProcess] = field(default_factory=dict)

    @property
    def master_name(self) -> str:
        return REDIS_MASTER_NAME

    @property
    def sentinel_addresses(self) -> list[str]:
        return [sentinel.address for sentinel in self.sentinels.values()]

    def start(self) -> None:
        first, second = REDIS_NODES
        try:
            master = RedisNode(first, self.workdir / f"redis-{first}", self.password, tls=self._tls(f"redis-{first}"),
                               place=self._place(first))  # fmt: skip
            self.nodes[first] = master
            master.start()
            replica = RedisNode(second, self.workdir / f"redis-{second}", self.password,
                                replica_of=(master.place.host, master.port), tls=self._tls(f"redis-{second}"),
                                place=self._place(second))  # fmt: skip
            self.nodes[second] = replica
            replica.start()
            wait_until(lambda: replica.role() == "slave", 15, f"redis {second} replicating")
            for name in SENTINELS:
                sentinel = SentinelProcess(name, self.workdir / f"sentinel-{name}", self.sentinel_password,
                                           tls=self._tls(f"sentinel-{name}"), place=self._place(name))  # fmt: skip
                self.sentinels[name] = sentinel
                sentinel.start(master.port, self.password, self.down_after_ms, self.failover_timeout_ms,
                               master.place.host)  # fmt: skip
            wait_until(self._sentinels_agree, 20, "sentinels seeing each other and the replica")
        except BaseException:
            self.stop()
            raise

    def _place(self, name: str) -> Place:
        return self.places.get(name, Place())

    def _tls(self, holder: str) -> SiteCertificate | None:
        return None if self.tls is None else self.tls[holder]

    def _sentinels_agree(self) -> bool:
        states = [sentinel.master_state() for sentinel in self.sentinels.values() if sentinel.pid]
        return all(
            state is not None and int(state["num-other-sentinels"]) == len(states) - 1
            and int(state["num-slaves"]) >= 1 and "s_down" not in state["flags"]
            for state in states
        )  # fmt: skip

    def master(self) -> str | None:
        """The node the majority of the sentinels that answer name as master (None: no agreement)."""
        votes: dict[str, int] = {}
        for sentinel in self.sentinels.values():
            state = sentinel.master_state() if sentinel.pid else None
            if state is not None:
                at = (state["ip"], int(state["port"]))
                name = next((n for n, node in self.nodes.items() if (node.place.host, node.port) == at), "?")
                votes[name] = votes.get(name, 0) + 1
        best = max(votes.items(), key=lambda vote: vote[1], default=None)
        return best[0] if best is not None and best[1] >= 2 else None

    def master_node(self) -> RedisNode:
        name = self.master()
        if name is None or name not in self.nodes:
            raise LabError("the sentinels name no master")
        return self.nodes[name]

    @property
    def url(self) -> str:
        """The current master's URL, password included (for tests that look into Redis directly)."""
        return self.master_node().url

    @property
    def pid(self) -> int:
        """The current master's process."""
        return self.master_node().pid

    def kill(self, name: str) -> None:
        """kill -9 a node (drills: the master dies in the middle of the burst)."""
        self.nodes[name].kill()

    def wait_for_master(self, other_than: str, timeout: float = 30.0) -> str:
        """Wait until the sentinels name a live master other than ``other_than``; its name."""
        found: list[str] = []

        def failed_over() -> bool:
            name = self.master()
            if name is None or name == other_than or self.nodes[name].role() != "master":
                return False
            found.append(name)
            return True

        wait_until(failed_over, timeout, f"a Redis master other than {other_than}")
        return found[-1]

    def restart(self, name: str, timeout: float = 40.0) -> None:
        """Start a killed node again and wait until the sentinels made it a synced replica.

        Only after the failover: a master without persistence restarted before the sentinels
        promoted its replica would come back empty and the replica would copy the emptiness.
        """
        node = self.nodes[name]
        if node.pid:
            raise LabError(f"redis {name} is running")
        if self.master() == name:
            self.wait_for_master(other_than=name, timeout=timeout)
        node.start()
        wait_until(lambda: node.role() == "slave", timeout, f"redis {name} back as a replica")

    def wait_whole(self, timeout: float = 40.0) -> None:
        """Wait until the sentinels agree on a live master and every other node is its synced
        replica (after a pause or a restart)."""

        def whole() -> bool:
            master = self.master()
            if master is None or self.nodes[master].role() != "master":
                return False
            others = [node for name, node in self.nodes.items() if name != master]
            return all(node.role() == "slave" for node in others) and self._sentinels_agree()

        wait_until(whole, timeout, "the Redis set whole again")

    def stop(self) -> None:
        """Every node and sentinel stopped and waited for (a process that is gone holds no port)."""
        for sentinel in self.sentinels.values():
            sentinel.stop()
        for node in self.nodes.values():
            node.stop()


@dataclass
class AsteriskSite:
    """One Asterisk instance of the lab, in the shared root filesystem.

    Its files live in <root>/srv/verbund112/<instance>/<site>/ (etc, lib,
    spool, run, log, cache); ports are given by the site values.
    """

    root: Path
    instance: str
    values: asterisk_config.SiteValues
    secrets: asterisk_config.SiteSecrets
    pid: int = 0
    process: subprocess.Popen | None = None  # type: ignore[type-arg]
    netns: str | None = None  # its network namespace (drill 6, lab/netns.py); None: the root one

    @property
    def inner_dir(self) -> str:
        return f"/srv/verbund112/{self.instance}/{self.values.name}"

    @property
    def host_dir(self) -> Path:
        return self.root / self.inner_dir.lstrip("/")

    @property
    def log_file(self) -> Path:
        return self.host_dir / "log" / "messages.log"

    def prepare(self) -> None:
        """Render the configuration and create the instance's folders."""
        files = asterisk_config.render(self.values, self.secrets)
        etc = self.host_dir / "etc"
        asterisk_config.write(files, etc)
        uid, gid = rootfs.asterisk_ids(self.root)
        for sub in ("etc", "lib", "spool", "run", "log", "cache"):
            (self.host_dir / sub).mkdir(parents=True, exist_ok=True)
        for path in [self.host_dir, *self.host_dir.rglob("*")]:
            os.chown(path, uid, gid)

    def start(self, timeout: float = 30.0) -> None:
        conf = f"{self.inner_dir}/etc/asterisk.conf"
        with (self.host_dir / "console.log").open("ab") as console:
            process = subprocess.Popen(
                Place(netns=self.netns).command(["chroot", str(self.root), "/usr/sbin/asterisk", "-C", conf, "-f",
                                                 "-n", "-U", "asterisk", "-G", "asterisk"]),
                stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        self.process = process
        self.pid = process.pid
        wait_until(self._fully_booted, timeout, f"Asterisk {self.values.name}", process)

    def _fully_booted(self) -> bool:
        # The service's AMI user has no "system" class, so it never sees
        # FullyBooted: ask over the control socket, then check that AMI listens.
        if not (self.host_dir / "run" / "asterisk.ctl").exists():
            return False
        try:
            booted = "fully booted" in self.cli("core waitfullybooted", timeout=5)
        except subprocess.TimeoutExpired:
            return False
        return booted and tcp_accepts(self.values.ami_port, self.values.ami_bind_address)

    def cli(self, command: str, timeout: float = 10.0) -> str:
        """An Asterisk CLI command over the control socket."""
        conf = f"{self.inner_dir}/etc/asterisk.conf"
        result = subprocess.run(
            ["chroot", str(self.root), "/usr/sbin/asterisk", "-C", conf, "-rx", command],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
        return result.stdout

    def stop(self) -> None:
        if self.pid:
            stop_process(self.pid, timeout=15)
            _reap(self.process)
            self.pid = 0

    def is_running(self) -> bool:
        return bool(self.pid) and _alive(self.pid)
