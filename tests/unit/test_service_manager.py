"""sd_notify: `verbund112 serve` tells its manager READY, STATUS, STOPPING and pings the watchdog."""

from __future__ import annotations

import contextlib
import signal
import socket
import time
from pathlib import Path

import prometheus_client as prom
from systemd_watchdog import WatchDog

from tests.unit.test_serve_process import start_serve
from verbund112.service_manager import ServiceManager


def notices(sock: socket.socket, until: str, within: float) -> list[str]:
    """Every notice received until one containing ``until`` (or the deadline: the test then fails)."""
    seen: list[str] = []
    deadline = time.monotonic() + within
    while not any(until in notice for notice in seen):
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no {until} within {within} s; got {seen}"
        sock.settimeout(remaining)
        try:
            seen.append(sock.recv(4096).decode())
        except TimeoutError:
            continue
    return seen


def test_serve_says_ready_pings_the_watchdog_and_says_stopping(tmp_path: Path) -> None:
    address = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        manager.bind(address)
        # a watchdog of 0.6 s: pings every 0.3 s
        process, _ = start_serve(tmp_path, env={"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "600000"})
        try:
            before_ready = notices(manager, "READY=1", within=20)
            status_lines = [n for n in before_ready if n.startswith("STATUS=")]
            assert status_lines, before_ready
            assert "FastAGI" in status_lines[-1]
            assert "down: ami" in status_lines[-1]  # nothing listens on its AMI port
            pings = 0
            while pings < 3:  # the event loop keeps pinging
                pings += sum("WATCHDOG=1" in n for n in notices(manager, "WATCHDOG=1", within=5))
            process.send_signal(signal.SIGTERM)
            notices(manager, "STOPPING=1", within=10)
            process.communicate(timeout=15)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
    assert process.returncode == 0


def test_serve_hung_by_sigstop_stops_pinging(tmp_path: Path) -> None:
    address = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        manager.bind(address)
        process, _ = start_serve(tmp_path, env={"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "400000"})
        try:
            notices(manager, "READY=1", within=20)
            process.send_signal(signal.SIGSTOP)
            manager.settimeout(0.5)
            with contextlib.suppress(TimeoutError):
                while True:  # whatever was sent before the stop
                    manager.recv(4096)
            manager.settimeout(1.0)  # more than twice the ping period
            try:
                late = manager.recv(4096)
            except TimeoutError:
                late = b""
            assert late == b"", "a stopped service cannot ping"
            process.send_signal(signal.SIGCONT)
            notices(manager, "WATCHDOG=1", within=5)  # and pings again when it runs again
        finally:
            process.kill()
            process.communicate()


def test_without_notify_socket_nothing_is_sent_and_nothing_fails() -> None:
    manager = ServiceManager(None, prom.CollectorRegistry())
    assert manager.watchdog_interval is None
    manager.ready("serving")
    manager.status("other")
    manager.stopping()


def test_a_manager_that_does_not_read_never_blocks_the_service_it_is_counted(tmp_path: Path) -> None:
    address = str(tmp_path / "notify")
    registry = prom.CollectorRegistry()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as deaf:
        deaf.bind(address)
        sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sender.setblocking(False)
        manager = ServiceManager(WatchDog(sock=sender, addr=address), registry)
        for number in range(2000):  # far more than a socket buffer holds
            manager.status(f"status {number}")
        failed = registry.get_sample_value("verbund112_service_manager_notices_failed_total", {"notice": "STATUS"})
        assert failed is not None and failed > 0
    manager.stopping()  # the manager is gone now: counted, not raised
    gone = registry.get_sample_value("verbund112_service_manager_notices_failed_total", {"notice": "STOPPING"})
    assert gone == 1
    sender.close()


def test_the_watchdog_interval_comes_from_watchdog_usec(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    monkeypatch.setenv("WATCHDOG_USEC", "5000000")
    from verbund112.service_manager import watchdog_from_environment

    watchdog = watchdog_from_environment()
    assert watchdog is not None
    assert ServiceManager(watchdog, prom.CollectorRegistry()).watchdog_interval == 5.0
    monkeypatch.delenv("WATCHDOG_USEC")
    without = watchdog_from_environment()
    assert ServiceManager(without, prom.CollectorRegistry()).watchdog_interval is None
    for made in (watchdog, without):
        assert made is not None
        made._socket.close()
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert watchdog_from_environment() is None
