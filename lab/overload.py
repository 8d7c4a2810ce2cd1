"""Drill 7, overload: a burst above what one site's Asterisk can take, then normal load.

    python -m lab.overload                 # full size: finds the knee first, then the drill
    python -m lab.overload --help

The bench lab with the service routing at both sites. The carrier's callers (sipp,
lab/sipp/carrier_112.xml) give up after `patience_ms` without an answer and CANCEL, as a
telephone network does. The drill asserts nothing itself; it measures: calls and failures of
the burst, the recovery time (from the start of the normal load to the first call after which
every call was answered), and the channels and queue callers left when the normal load is over.

Full size, two labs one after the other. The knee is found in a lab whose queue has the bench's
one SIP peer answering every call at once (a ringinuse member): the knee of Asterisk and the
service, not of desks. The burst and the normal load then go to a fresh lab with `desks` queue
members of one call each, as a Leitstelle's desks are.

Why not the answer-all peer for the burst too: after a 150/s burst it took not one call of the
normal load (0 of 1200), with the member "Not in use" and never rung. That is app_queue, not the
service. A waiting caller may ring only while fewer callers stand before it than members are
available (`is_our_turn`; callers ringing a member do not count), and it checks that once a
second from the moment it joined (`RECHECK`, fixed in the code). One ringinuse member is one
available member: only the head of the queue may ring. Once the backlog is older than the
callers' patience, the head moves on only when the caller before it gives up, and the new head
gives up itself before its next check: at 20 callers a second each is the head for about 50 ms,
between two of its checks, and nobody is rung again. Seen in the lab: the queue's debug log
(`core set debug 5 app_queue`) had "It's not our turn" from every caller for 3 s and no "It's
our turn"; none of the 274 callers that gave up meanwhile checked while it was the head; the
queue_log had no CONNECT after the burst's 11th second.
With desks of one call each, as many callers as desks are free may ring, and the queue drains.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lab import lab
from lab.processes import LOOPBACK, AsteriskSite, LabError, free_rtp_base, release_rtp_base, stop_process

SITE = "jena"
CALLER = "036411234567"  # a Jena number: the routing keeps the call at Jena


@dataclass(frozen=True)
class Load:
    rate: float  # calls per second
    seconds: float
    talk_ms: int
    patience_ms: int  # the caller gives up (CANCEL) when nobody answered within this

    @property
    def calls(self) -> int:
        return max(1, round(self.rate * self.seconds))


@dataclass(frozen=True)
class Run:
    """One sipp run: its calls, and the numbers (1..calls, in start order) of those that failed."""

    load: Load
    answered: int
    failed: frozenset[int]

    def started_at(self, number: int) -> float:
        """Seconds after the run's start at which call `number` was placed."""
        return (number - 1) / self.load.rate


@dataclass(frozen=True)
class DrillResult:
    burst: Run
    normal: Run
    channels_after: int  # right when the normal load is over
    queue_after: int
    channels_settled: int  # after waiting (bounded) for the last calls to end
    settle_s: float

    @property
    def recovery_s(self) -> float:
        """From the start of the normal load to the start of the first call after which every call was answered."""
        if not self.normal.failed:
            return 0.0
        return self.normal.started_at(max(self.normal.failed) + 1)

    def lines(self, knee: str) -> list[str]:
        return [
            f"overload drill at {SITE}: knee {knee}",
            f"  burst {self.burst.load.rate:g}/s for {self.burst.load.seconds:g} s: {self.burst.load.calls} calls, "
            f"{self.burst.answered} answered, {len(self.burst.failed)} failed",
            f"  normal {self.normal.load.rate:g}/s for {self.normal.load.seconds:g} s: {self.normal.load.calls} calls, "
            f"{self.normal.answered} answered, {len(self.normal.failed)} failed; recovery {self.recovery_s:.1f} s",
            f"  after the normal load: {self.channels_after} channels, {self.queue_after} callers in the queue; "
            f"{self.channels_settled} channels {self.settle_s:.1f} s later",
        ]


@dataclass(frozen=True)
class Calls:
    """A sipp run placing calls, and its RTP range (given back when it ends)."""

    process: subprocess.Popen[bytes]
    media: int


def start_calls(site: AsteriskSite, load: Load, work: Path) -> Calls:
    """sipp at `load.rate` calls/s into the site, as the carrier's trunk."""
    work.mkdir(parents=True, exist_ok=True)
    media = free_rtp_base(10)
    args = [
        "sipp", f"{LOOPBACK}:{site.values.sip_port}", "-sf", str(lab.SIPP_DIR / "carrier_112.xml"),
        "-i", lab.CARRIER_ADDRESS, "-p", str(lab._free_carrier_port()), "-mp", str(media),
        "-key", "caller", CALLER, "-key", "uui", "00",
        "-r", str(round(load.rate * 1000)), "-rp", "1000000", "-m", str(load.calls), "-l", str(load.calls),
        "-d", str(load.talk_ms), "-recv_timeout", str(load.patience_ms),
        "-timeout", f"{round(load.seconds + (load.patience_ms + load.talk_ms) / 1000 + 60)}s",
        "-nostdin", "-nd", "-trace_stat", "-stf", "stat.csv", "-trace_err", "-error_file", "errors.log",
    ]  # fmt: skip
    return Calls(subprocess.Popen(args, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), media)


def calls_done(calls: Calls, load: Load, work: Path) -> Run:
    """Waits for the sipp run to end; its answered calls and the numbers of the failed ones."""
    try:
        calls.process.wait(timeout=load.seconds + 300)
    finally:
        if calls.process.poll() is None:
            stop_process(calls.process.pid, timeout=5)
        release_rtp_base(calls.media)  # the later lab of a full drill needs 4000 ports in a row
    with (work / "stat.csv").open() as handle:
        last = list(csv.DictReader(handle, delimiter=";"))[-1]
    failed = _failed_calls(work / "errors.log")
    if len(failed) != int(last["FailedCall(C)"]):
        raise LabError(f"sipp counted {last['FailedCall(C)']} failed calls, its error log names {len(failed)}")
    return Run(load, int(last["SuccessfulCall(C)"]), failed)


def place_calls(site: AsteriskSite, load: Load, work: Path) -> Run:
    return calls_done(start_calls(site, load, work), load, work)


# sipp's Call-ID is "<call number>-<pid>@<address>"; a failed call is aborted with one of these
# (sipp writes its error log without line breaks between some entries)
_ABORTED = re.compile(
    r"Call-Id: (\d+)-\d+@\S+, receive timeout on message [^,]*without label"
    r"|Aborting call on unexpected message for Call-Id '(\d+)-\d+@"
)


def _failed_calls(errors: Path) -> frozenset[int]:
    if not errors.exists():
        return frozenset()
    text = errors.read_text(errors="replace")
    return frozenset(int(match.group(1) or match.group(2)) for match in _ABORTED.finditer(text))


def channels(site: AsteriskSite) -> int:
    first = site.cli("core show channels count").splitlines()[:1]
    return int(first[0].split()[0]) if first and first[0].split()[0].isdigit() else -1


def queue_callers(site: AsteriskSite) -> int:
    match = re.search(r"has (\d+) calls?", site.cli(f"queue show {site.values.queue}"))
    return int(match.group(1)) if match else -1


def drill(verbund: lab.Verbund, burst: Load, normal: Load, work: Path, settle_s: float = 60.0) -> DrillResult:
    """The burst, then the normal load from the moment the burst's last call was placed
    (the burst's callers still wait or give up meanwhile); then the channels and the queue."""
    site = verbund.site(SITE)
    burst_sipp = start_calls(site, burst, work / "burst")
    time.sleep(burst.seconds)  # the burst's schedule: sipp places its calls over these seconds
    normal_sipp = start_calls(site, normal, work / "normal")
    burst_run = calls_done(burst_sipp, burst, work / "burst")
    normal_run = calls_done(normal_sipp, normal, work / "normal")
    channels_after, queue_after = channels(site), queue_callers(site)
    began = time.monotonic()
    settled = wait_idle(site, settle_s)
    return DrillResult(burst_run, normal_run, channels_after, queue_after, settled, time.monotonic() - began)


def wait_idle(site: AsteriskSite, within_s: float) -> int:
    """Waits (at most `within_s`) until the site has no channel; the channels left."""
    deadline = time.monotonic() + within_s
    while (left := channels(site)) != 0 and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


def find_knee(verbund: lab.Verbund, rates: list[float], seconds: float, talk_ms: int, work: Path) -> float:
    """The highest of `rates` (calls/s, ascending) without a failed call: the site's knee as the bench finds it."""
    knee = 0.0
    for rate in rates:
        run = place_calls(verbund.site(SITE), Load(rate, seconds, talk_ms, 10000), work / f"knee-{rate:g}")
        left = wait_idle(verbund.site(SITE), 60)
        print(f"  {rate:g}/s: {run.answered} answered, {len(run.failed)} failed; {left} channels left", flush=True)
        if run.failed:
            break
        knee = rate
    return knee


@contextlib.contextmanager
def bench_lab(instance: str, rtp_ports: int, desks: int = 0) -> Iterator[lab.Verbund]:
    """The bench lab with both services routing, and the answering peer at Jena: one queue member
    answering every call at once (desks 0), or `desks` members of one call each. Stopped, and its
    RTP ranges given back, on the way out (the later lab of a full drill needs 4000 ports in a row)."""
    with contextlib.ExitStack() as cleanup:
        media = free_rtp_base(10)
        cleanup.callback(release_rtp_base, media)
        verbund = lab.start_verbund(instance, log=print, bench=True, bench_desks={SITE: desks}, rtp_ports=rtp_ports)
        cleanup.callback(verbund.stop)
        cleanup.callback(_stop, lab.bench_desk(verbund.site(SITE), timeout_s=3600, media=media))
        for name in ("jena", "gera"):
            cleanup.callback(_stop, lab._start_service(verbund, name, lab.lab_dir() / instance))
        yield verbund


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.communicate(timeout=15)  # also closes its pipes
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()


@dataclass(frozen=True)
class Trial:
    """A drill's lab and load. Without a burst, the knee is found first, in a lab of its own with
    the answer-all peer, and the burst is `burst_factor` times it for `burst_seconds` (`talk_ms`
    and `patience_ms` as the normal load's)."""

    normal: Load
    burst: Load | None = None
    rtp_ports: int = lab.BENCH_RTP_PORTS
    desks: int = 0  # the burst's and the normal load's; 0: one answering peer takes every call at once
    settle_s: float = 60.0
    knee_rates: tuple[float, ...] = (60, 80, 100, 120, 140, 160)
    knee_seconds: float = 10
    burst_factor: float = 1.5
    burst_seconds: float = 20


RECOVERY_LIMIT_S = 30.0  # issue 11: the site is back to no failed call within 30 s of normal load

# Full size: from the knee; 20 calls/s of normal load for 60 s, 1 s of talk each: 20 desks busy
# on average, 40 leave room for the ringing and the caller's turn (checked once a second).
FULL = Trial(normal=Load(rate=20, seconds=60, talk_ms=1000, patience_ms=10000), desks=40)
# CI size (tests/integration/test_overload.py, `lab.drill --size ci`): Jena's RTP range narrowed to
# 60 ports (30 channels with media) and two desks of one call each, so that a burst of 40 calls
# fills every channel with callers waiting in the queue and Asterisk refuses the rest (488, no RTP
# port), the way a bench run past 100 calls/s does on the full range.
CI = Trial(
    burst=Load(rate=10, seconds=4, talk_ms=4000, patience_ms=6000),
    normal=Load(rate=0.5, seconds=50, talk_ms=1000, patience_ms=6000),
    rtp_ports=60,
    desks=2,
    settle_s=15,
)


def run(trial: Trial, work: Path, instance: str) -> tuple[DrillResult, str]:
    """The drill in a lab of its own (the knee search first in another); its result and what the
    burst was measured against (the knee)."""
    if trial.burst is not None:
        burst, knee = trial.burst, f"{trial.desks} desks and {trial.rtp_ports // 2} channels with media"
    else:
        rate = knee_of(trial, work, f"{instance}-knee") or trial.knee_rates[0]
        talk_ms, patience_ms = trial.normal.talk_ms, trial.normal.patience_ms
        burst = Load(rate * trial.burst_factor, trial.burst_seconds, talk_ms, patience_ms)
        knee = f"{rate:g} calls/s (answer-all peer); burst and normal load on {_desks(trial.desks)}"
    with bench_lab(instance, trial.rtp_ports, trial.desks) as verbund:
        return drill(verbund, burst, trial.normal, work, settle_s=trial.settle_s), knee


def knee_of(trial: Trial, work: Path, instance: str) -> float:
    """The knee as the bench finds it, in a lab of its own with the answer-all peer (0: not even the first rate)."""
    with bench_lab(instance, trial.rtp_ports) as verbund:
        talk_ms = trial.normal.talk_ms
        print(f"knee at {SITE} (routed, {trial.knee_seconds:g} s per rate, talk {talk_ms} ms):", flush=True)
        return find_knee(verbund, list(trial.knee_rates), trial.knee_seconds, talk_ms, work)


def _desks(desks: int) -> str:
    return f"{desks} desks of one call each" if desks else "the answer-all peer"


def late_failures(result: DrillResult) -> list[int]:
    """The calls of the normal load that failed though placed after the recovery limit."""
    return sorted(n for n in result.normal.failed if result.normal.started_at(n) >= RECOVERY_LIMIT_S)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default=",".join(f"{r:g}" for r in FULL.knee_rates), help="knee search, calls/s")
    parser.add_argument("--knee-seconds", type=float, default=FULL.knee_seconds)
    parser.add_argument("--burst-factor", type=float, default=FULL.burst_factor, help="burst rate = knee x this")
    parser.add_argument("--burst-seconds", type=float, default=FULL.burst_seconds)
    parser.add_argument("--normal-rate", type=float, default=FULL.normal.rate)
    parser.add_argument("--normal-seconds", type=float, default=FULL.normal.seconds)
    parser.add_argument("--talk-ms", type=int, default=FULL.normal.talk_ms)
    parser.add_argument("--patience-ms", type=int, default=FULL.normal.patience_ms)
    parser.add_argument("--rtp-ports", type=int, default=FULL.rtp_ports)
    parser.add_argument("--desks", type=int, default=FULL.desks, help="burst and normal load; 0: the answer-all peer")
    args = parser.parse_args(argv)
    trial = Trial(
        normal=Load(args.normal_rate, args.normal_seconds, args.talk_ms, args.patience_ms),
        rtp_ports=args.rtp_ports,
        desks=args.desks,
        knee_rates=tuple(float(rate) for rate in args.rates.split(",")),
        knee_seconds=args.knee_seconds,
        burst_factor=args.burst_factor,
        burst_seconds=args.burst_seconds,
    )
    work = Path(tempfile.mkdtemp(prefix="v112-overload-"))
    result, knee = run(trial, work, f"overload-{os.getpid()}")
    print("\n".join(result.lines(knee)))
    print(f"sipp's files: {work}")
    recovered = result.recovery_s <= RECOVERY_LIMIT_S and result.channels_settled == 0 and result.queue_after == 0
    return 0 if recovered else 1


if __name__ == "__main__":
    sys.exit(main())
