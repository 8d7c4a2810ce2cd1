"""The lab's service manager: runs one service as systemd runs it in production.

Like the shipped unit (deploy/systemd/verbund112@.service: Type=notify, WatchdogSec,
Restart=always) it gives the service a notify socket of its own (NOTIFY_SOCKET, a unix
datagram socket) and WATCHDOG_USEC, waits for READY=1, restarts the service when it exits
(after a short back-off that grows while it keeps failing), and kills it (SIGKILL) and
restarts it when a watchdog ping is missed or READY=1 does not come in time. Notices are
taken from the current child only (the sender's pid, SO_PASSCRED), as NotifyAccess=main.

Every step is a JSON line in the events file (``started``, ``ready``, ``status``,
``watchdog-missed``, ``start-timeout``, ``exited``, ``restarting``, ``stopping``,
``stopped``; each with ``time`` and the child's ``pid``), so tests and drills can wait for
a restart and find the current child (``SupervisorEvents``). SIGTERM stops the child
(SIGTERM, then SIGKILL) and then the supervisor; SIGHUP is passed on to the child.

    python -m lab.supervisor --events E.jsonl --socket @NAME --log L [--watchdog 4] -- CMD ARGS...
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

CREDENTIALS = struct.Struct("3i")  # struct ucred: pid, uid, gid
STABLE_RUN_S = 30.0  # a child that was ready this long starts again after the first delay


@dataclass
class Options:
    command: list[str]
    events: Path
    socket_address: str  # a path, or "@name" for an abstract socket (no file, nothing to clean up)
    log: Path
    watchdog_s: float = 4.0
    start_timeout_s: float = 60.0
    restart_s: float = 0.5
    restart_max_s: float = 5.0
    stop_timeout_s: float = 10.0


@dataclass
class _Child:
    process: subprocess.Popen[bytes]
    started: float
    ready_at: float | None = None
    last_ping: float = 0.0
    status: str = ""
    history: list[str] = field(default_factory=list)


class Supervisor:
    def __init__(self, options: Options) -> None:
        self.options = options
        self._stop = False
        self._hangup = False

    def _event(self, event: str, pid: int | None, **extra: Any) -> None:
        line = json.dumps({"time": time.time(), "event": event, "pid": pid, **extra})
        with self.options.events.open("a") as events:
            events.write(line + "\n")

    def _on_signal(self, signum: int, _: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            self._hangup = True
        else:
            self._stop = True

    def run(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._on_signal)
        address = self.options.socket_address
        abstract = address.startswith("@")
        if not abstract:
            Path(address).unlink(missing_ok=True)
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind("\0" + address[1:] if abstract else address)
            if not abstract:
                Path(address).chmod(0o600)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
            delay = self.options.restart_s
            while not self._stop:
                child = self._start()
                reason = self._watch(child, sock)
                if reason == "stopped":
                    break
                ran_well = child.ready_at is not None and time.monotonic() - child.ready_at > STABLE_RUN_S
                delay = self.options.restart_s if ran_well else delay
                self._event("restarting", child.process.pid, reason=reason, delay_s=delay)
                self._sleep(delay)
                delay = min(delay * 2, self.options.restart_max_s)
        if not abstract:
            Path(address).unlink(missing_ok=True)
        self._event("stopped", None)

    def _start(self) -> _Child:
        env = {
            **os.environ,
            "NOTIFY_SOCKET": self.options.socket_address,
            "WATCHDOG_USEC": str(int(self.options.watchdog_s * 1_000_000)),
        }
        with self.options.log.open("ab") as log:
            process = subprocess.Popen(self.options.command, stdout=log, stderr=subprocess.STDOUT, env=env)
        self._event("started", process.pid)
        return _Child(process, time.monotonic())

    def _watch(self, child: _Child, sock: socket.socket) -> str:
        """Until the child has to be restarted (why) or the supervisor is stopped ("stopped")."""
        pid = child.process.pid
        while True:
            readable, _, _ = select.select([sock], [], [], 0.05)
            if readable:
                self._receive(child, sock)
            if self._hangup:
                self._hangup = False
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGHUP)
            if self._stop:
                self._event("stopping", pid)
                self._end(child.process, graceful=True)
                return "stopped"
            returncode = child.process.poll()
            if returncode is not None:
                self._event("exited", pid, returncode=returncode)
                return "exited"
            now = time.monotonic()
            if child.ready_at is not None and now - child.last_ping > self.options.watchdog_s:
                self._event("watchdog-missed", pid, since_last_ping_s=round(now - child.last_ping, 3))
                self._end(child.process, graceful=False)
                return "watchdog"
            if child.ready_at is None and now - child.started > self.options.start_timeout_s:
                self._event("start-timeout", pid)
                self._end(child.process, graceful=False)
                return "start-timeout"

    def _receive(self, child: _Child, sock: socket.socket) -> None:
        with contextlib.suppress(BlockingIOError):
            while True:
                data, ancillary, _, _ = sock.recvmsg(4096, socket.CMSG_SPACE(CREDENTIALS.size), socket.MSG_DONTWAIT)
                sender = next(
                    (CREDENTIALS.unpack(payload[: CREDENTIALS.size])[0] for level, kind, payload in ancillary
                     if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS),
                    None,
                )  # fmt: skip
                if sender == child.process.pid:  # NotifyAccess=main: not a former child's
                    self._notice(child, data.decode(errors="replace"))

    def _notice(self, child: _Child, message: str) -> None:
        now = time.monotonic()
        for line in message.splitlines():
            key, _, value = line.partition("=")
            if key == "READY" and value == "1" and child.ready_at is None:
                child.ready_at = child.last_ping = now
                self._event("ready", child.process.pid, since_start_s=round(now - child.started, 3))
            elif key == "WATCHDOG" and value == "1":
                child.last_ping = now
            elif key == "STATUS" and value != child.status:
                child.status = value
                self._event("status", child.process.pid, status=value)
            elif key == "STOPPING":
                self._event("stopping-notice", child.process.pid)

    def _end(self, process: subprocess.Popen[bytes], *, graceful: bool) -> None:
        if graceful:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
                process.send_signal(signal.SIGCONT)  # a stopped child must see the SIGTERM
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(self.options.stop_timeout_s)
                return
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        process.wait()

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self._stop and time.monotonic() < deadline:
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))


class SupervisorEvents:
    """Reads a supervisor's events file, for tests and drills: wait for an event, find the child."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seen: list[dict[str, Any]] = []
        self._offset = 0

    def read(self) -> list[dict[str, Any]]:
        with contextlib.suppress(FileNotFoundError), self.path.open() as events:
            events.seek(self._offset)
            while (line := events.readline()).endswith("\n"):
                self._offset += len(line.encode())
                self.seen.append(json.loads(line))
        return self.seen

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout: float, after: int = 0) -> dict[str, Any]:
        """The first event from index ``after`` on that matches, waiting up to ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            for event in self.read()[after:]:
                if predicate(event):
                    return event
            if time.monotonic() > deadline:
                raise TimeoutError(f"no matching supervisor event within {timeout} s; saw {self.seen[after:]}")
            time.sleep(0.05)

    def current_pid(self) -> int | None:
        """The child running now: the last one started, unless it has ended since (None)."""
        pid = None
        for event in self.read():
            if event["event"] == "started":
                pid = int(event["pid"])
            elif event["event"] in {"exited", "restarting", "stopped"}:
                pid = None
        return pid


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lab.supervisor", description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=Path, required=True, help="JSON lines file of what happens")
    parser.add_argument("--socket", required=True, help="the notify socket to make (unix datagram): a path or @name")
    parser.add_argument("--log", type=Path, required=True, help="the child's output (appended across restarts)")
    parser.add_argument("--watchdog", type=float, default=4.0, help="seconds; WATCHDOG_USEC for the child")
    parser.add_argument("--start-timeout", type=float, default=60.0, help="seconds to wait for READY=1")
    parser.add_argument("--restart", type=float, default=0.5, help="first restart delay, doubled up to 5 s")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- the service's command line")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given")
    Supervisor(
        Options(command, args.events, args.socket, args.log, watchdog_s=args.watchdog,
                start_timeout_s=args.start_timeout, restart_s=args.restart)
    ).run()  # fmt: skip
    sys.exit(0)


if __name__ == "__main__":
    main()
