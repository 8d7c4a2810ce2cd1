"""The lab's supervisor restarts a service that exits or hangs, as systemd would (real processes)."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lab.processes import wait_until
from lab.supervisor import SupervisorEvents

# a service that speaks sd_notify: READY=1 (unless told not to), then WATCHDOG=1 at half the interval
CHILD = """
import sys, time
from systemd_watchdog import WatchDog
watchdog = WatchDog()
if sys.argv[1:] != ["never-ready"]:
    watchdog.status("up")
    watchdog.ready()
while True:
    watchdog.notify()
    time.sleep(watchdog.timeout_td.total_seconds() / 2)
"""


@pytest.fixture
def supervise(tmp_path: Path) -> Iterator[Callable[..., tuple[subprocess.Popen[bytes], SupervisorEvents]]]:
    started: list[subprocess.Popen[bytes]] = []
    folder = tmp_path

    def start(*child_args: str, watchdog: float = 1.0, start_timeout: float = 30.0):  # type: ignore[no-untyped-def]
        # named like a service: lab down recognises a service left behind by "verbund112" in its command
        (folder / "verbund112_stand_in.py").write_text(CHILD)
        events = folder / f"events-{len(started)}.jsonl"
        process = subprocess.Popen(
            [sys.executable, "-m", "lab.supervisor", "--events", str(events), "--socket",
             f"@v112-test-{secrets.token_hex(8)}", "--log", str(folder / "child.log"), "--watchdog",
             str(watchdog), "--start-timeout", str(start_timeout), "--restart", "0.1", "--",
             sys.executable, str(folder / "verbund112_stand_in.py"), *child_args],
            start_new_session=True,
        )  # fmt: skip
        started.append(process)
        return process, SupervisorEvents(events)

    yield start
    for process in started:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=20)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"


def test_a_killed_service_is_restarted_and_ready_again(supervise) -> None:
    _, events = supervise()
    first = events.wait_for(lambda e: e["event"] == "ready", 20)
    os.kill(first["pid"], signal.SIGKILL)
    exited = events.wait_for(lambda e: e["event"] == "exited", 10)
    assert exited["pid"] == first["pid"]
    assert exited["returncode"] == -signal.SIGKILL
    restarting = events.wait_for(lambda e: e["event"] == "restarting", 10)
    assert restarting["reason"] == "exited"
    again = events.wait_for(lambda e: e["event"] == "ready" and e["pid"] != first["pid"], 20)
    assert events.current_pid() == again["pid"]
    print(f"restart after kill -9: {again['time'] - exited['time']:.2f} s to READY")


def test_a_hung_service_misses_the_watchdog_is_killed_and_restarted(supervise) -> None:
    _, events = supervise(watchdog=1.0)
    first = events.wait_for(lambda e: e["event"] == "ready", 20)
    os.kill(first["pid"], signal.SIGSTOP)
    missed = events.wait_for(lambda e: e["event"] == "watchdog-missed", 10)
    assert missed["pid"] == first["pid"]
    restarting = events.wait_for(lambda e: e["event"] == "restarting", 10)
    assert restarting["reason"] == "watchdog"
    assert not alive(first["pid"])  # killed, not left stopped
    again = events.wait_for(lambda e: e["event"] == "ready" and e["pid"] != first["pid"], 20)
    assert events.current_pid() == again["pid"]


def test_a_service_that_never_says_ready_is_killed_and_started_again(supervise) -> None:
    _, events = supervise("never-ready", start_timeout=1.0)
    timed_out = events.wait_for(lambda e: e["event"] == "start-timeout", 15)
    events.wait_for(lambda e: e["event"] == "started" and e["pid"] != timed_out["pid"], 10)
    assert not alive(timed_out["pid"])


def test_stopping_the_supervisor_stops_its_service_and_leaves_nothing(supervise) -> None:
    supervisor, events = supervise()
    ready = events.wait_for(lambda e: e["event"] == "ready", 20)
    os.kill(ready["pid"], signal.SIGSTOP)  # even a hung one
    supervisor.terminate()
    assert supervisor.wait(timeout=20) == 0
    events.wait_for(lambda e: e["event"] == "stopped", 5)
    wait_until(lambda: not alive(ready["pid"]), 5, "the service gone")
    assert not any(e["event"] == "restarting" for e in events.read())


def test_lab_down_stops_a_service_whose_supervisor_was_killed(supervise) -> None:
    from lab.lab import stop_supervisor

    supervisor, events = supervise()
    ready = events.wait_for(lambda e: e["event"] == "ready", 20)
    supervisor.kill()
    supervisor.wait(timeout=10)
    assert alive(ready["pid"])  # orphaned, still running
    stop_supervisor(supervisor.pid)
    wait_until(lambda: not alive(ready["pid"]), 5, "the orphaned service gone")
