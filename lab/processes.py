"""The lab's server processes: redis-server and the Asterisk instances.

Everything listens on 127.0.0.1 on free ports. Each class starts its process,
waits until it really serves (no sleep-and-hope) and stops it without leaving
a process or a port behind.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lab import rootfs
from verbund112 import asterisk_config

LOOPBACK = "127.0.0.1"


class LabError(RuntimeError):
    pass


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
_RTP_RANGES: list[tuple[int, int]] = []
_RTP_LOCK = threading.Lock()


def free_rtp_base(width: int) -> int:
    """An even port with `width` free UDP ports above it (RTP needs even ports), not overlapping
    any range this process handed out before."""
    with _RTP_LOCK:
        for _ in range(200):
            # below the kernel's ephemeral ports (32768 and up), which sockets get for port 0
            base = random.randrange(10000, 32000 - width, 2)
            if any(base < end and start < base + width for start, end in _RTP_RANGES):
                continue
            if all(_udp_free(port) for port in range(base, base + width)):
                _RTP_RANGES.append((base, base + width))
                return base
    raise LabError("no free RTP port range")


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


@dataclass
class RedisServer:
    """redis-server on loopback, no persistence."""

    workdir: Path
    port: int = 0
    pid: int = 0
    process: subprocess.Popen | None = None  # type: ignore[type-arg]

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_tcp_port()
        with (self.workdir / "redis.log").open("ab") as log_file:
            process = subprocess.Popen(
                [
                "redis-server", "--bind", LOOPBACK, "--port", str(self.port),
                "--save", "", "--appendonly", "no", "--daemonize", "no",
                "--dir", str(self.workdir), "--protected-mode", "yes",
            ],
            stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        self.process = process
        self.pid = process.pid
        wait_until(self._answers_ping, 10, "redis-server", process)

    def _answers_ping(self) -> bool:
        with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, self.port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
        return False

    def stop(self) -> None:
        if self.pid:
            stop_process(self.pid)
            _reap(self.process)
            self.pid = 0


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
                ["chroot", str(self.root), "/usr/sbin/asterisk", "-C", conf, "-f", "-n",
                 "-U", "asterisk", "-G", "asterisk"],
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
        return booted and tcp_accepts(self.values.ami_port)

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
