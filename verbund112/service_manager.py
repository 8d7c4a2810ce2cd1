"""Telling the service manager (systemd, or the lab's supervisor) how the service is: sd_notify.

READY=1 once the service serves, STATUS= lines for ``systemctl status``, STOPPING=1 at stop,
and WATCHDOG=1 from the event loop at half the interval in ``WATCHDOG_USEC``: a hung event
loop stops pinging, and the manager kills and restarts the service (the dialplan routes the
calls meanwhile). Without ``NOTIFY_SOCKET`` nothing is sent.

The protocol is systemd-watchdog's (it reads ``NOTIFY_SOCKET``, abstract sockets included,
``WATCHDOG_USEC`` and ``WATCHDOG_PID``). Its socket is made non-blocking here: a manager that
stopped reading can never stall the event loop. A notice that cannot be sent is logged and
counted, never raised: the service keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable
from datetime import timedelta

import prometheus_client as prom
from systemd_watchdog import WatchDog

log = logging.getLogger(__name__)

# systemd-watchdog's interval when WATCHDOG_USEC is not set (or is meant for another process)
_NO_WATCHDOG = timedelta(hours=24)


def watchdog_from_environment() -> WatchDog | None:
    """The sender to the manager named in NOTIFY_SOCKET; None when no manager listens."""
    if not os.environ.get("NOTIFY_SOCKET"):
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.setblocking(False)
    return WatchDog(sock=sock)


class ServiceManager:
    """The service's side of sd_notify. ``watchdog`` None: no manager is listening, nothing is sent."""

    def __init__(self, watchdog: WatchDog | None, registry: prom.CollectorRegistry) -> None:
        self._watchdog = watchdog
        self._failed = prom.Counter(
            "verbund112_service_manager_notices_failed", "sd_notify notices that could not be sent, by notice",
            ["notice"], registry=registry,
        )  # fmt: skip
        self._status = ""

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds within which the manager wants a WATCHDOG=1; None: no watchdog."""
        if self._watchdog is None or self._watchdog.timeout_td >= _NO_WATCHDOG:
            return None
        return self._watchdog.timeout_td.total_seconds()

    def _send(self, notice: str, send: Callable[[WatchDog], None]) -> None:
        if self._watchdog is None:
            return
        try:
            send(self._watchdog)
        except OSError as exc:  # the manager is gone, or does not read (a full socket buffer)
            self._failed.labels(notice).inc()
            log.warning("service manager: %s not sent (%s)", notice, exc)

    def ready(self, status: str) -> None:
        self.status(status)
        self._send("READY", WatchDog.ready)

    def status(self, status: str) -> None:
        if status != self._status:
            self._status = status
            self._send("STATUS", lambda watchdog: watchdog.status(status))

    def stopping(self) -> None:
        # systemd-watchdog has no stopping(); its sender is the one that knows the socket's address
        self._send("STOPPING", lambda watchdog: watchdog._send("STOPPING=1\n"))

    async def keep_alive(self, describe: Callable[[], str]) -> None:
        """WATCHDOG=1 at half the interval, from the event loop (a hung loop stops it), and the
        status line whenever ``describe()`` changes. Without a manager it just waits (a loop)."""
        interval = self.watchdog_interval
        if self._watchdog is None:
            await asyncio.Event().wait()
        period = interval / 2 if interval is not None else 1.0
        while True:
            if interval is not None:
                self._send("WATCHDOG", WatchDog.notify)
            self.status(describe())
            await asyncio.sleep(period)
