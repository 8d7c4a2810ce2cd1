"""Drill 7, overload: a burst above what one site's Asterisk can take, then normal load.

    python -m lab.overload                 # full size: finds the knee first, then the drill
    python -m lab.overload --help

The bench lab (one sipp peer answering every call the queue offers) with the service
routing at both sites. The carrier's callers (sipp, lab/sipp/carrier_112.xml) give up after
`patience_ms` without an answer and CANCEL, as a telephone network does. The drill
asserts nothing itself; it measures: calls and failures of the burst, the recovery time
(from the start of the normal load to the first call after which every call was answered),
and the channels and queue callers left when the normal load is over.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from lab import lab
from lab.processes import LOOPBACK, AsteriskSite, LabError, free_rtp_base

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


def start_calls(site: AsteriskSite, load: Load, work: Path) -> subprocess.Popen[bytes]:
    """sipp at `load.rate` calls/s into the site, as the carrier's trunk."""
    work.mkdir(parents=True, exist_ok=True)
    args = [
        "sipp", f"{LOOPBACK}:{site.values.sip_port}", "-sf", str(lab.SIPP_DIR / "carrier_112.xml"),
        "-i", lab.CARRIER_ADDRESS, "-p", str(lab._free_carrier_port()), "-mp", str(free_rtp_base(10)),
        "-key", "caller", CALLER, "-key", "uui", "00",
        "-r", str(round(load.rate * 1000)), "-rp", "1000000", "-m", str(load.calls), "-l", str(load.calls),
        "-d", str(load.talk_ms), "-recv_timeout", str(load.patience_ms),
        "-timeout", f"{round(load.seconds + (load.patience_ms + load.talk_ms) / 1000 + 60)}s",
        "-nostdin", "-nd", "-trace_stat", "-stf", "stat.csv", "-trace_err", "-error_file", "errors.log",
    ]  # fmt: skip
    return subprocess.Popen(args, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def calls_done(process: subprocess.Popen[bytes], load: Load, work: Path) -> Run:
    """Waits for the sipp run to end; its answered calls and the numbers of the failed ones."""
    process.wait(timeout=load.seconds + 300)
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


def start_lab(instance: str, rtp_ports: int, desks: int = 0) -> tuple[lab.Verbund, list[subprocess.Popen[bytes]]]:
    """The bench lab with both services routing, and the answering peer at Jena: one queue member
    answering every call at once, or `desks` members of one call each."""
    verbund = lab.start_verbund(instance, log=print, bench=True, bench_desks={SITE: desks}, rtp_ports=rtp_ports)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        processes.append(lab.bench_desk(verbund.site(SITE), timeout_s=3600))
        directory = lab.lab_dir() / instance
        processes += [lab._start_service(verbund, name, directory) for name in ("jena", "gera")]
    except BaseException:
        stop_lab(verbund, processes)
        raise
    return verbund, processes


def stop_lab(verbund: lab.Verbund, processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        process.terminate()
        try:
            process.communicate(timeout=15)  # also closes its pipes
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
    verbund.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="60,80,100,120,140,160", help="knee search, calls/s (ascending)")
    parser.add_argument("--knee-seconds", type=float, default=10)
    parser.add_argument("--burst-factor", type=float, default=1.5, help="burst rate = knee x this")
    parser.add_argument("--burst-seconds", type=float, default=20)
    parser.add_argument("--normal-rate", type=float, default=20)
    parser.add_argument("--normal-seconds", type=float, default=60)
    parser.add_argument("--talk-ms", type=int, default=1000)
    parser.add_argument("--patience-ms", type=int, default=10000)
    parser.add_argument("--rtp-ports", type=int, default=lab.BENCH_RTP_PORTS)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="v112-overload-"))
    verbund, processes = start_lab(f"overload-{os.getpid()}", args.rtp_ports)
    try:
        print(f"knee at {SITE} (routed, {args.knee_seconds:g} s per rate, talk {args.talk_ms} ms):", flush=True)
        rates = [float(rate) for rate in args.rates.split(",")]
        knee = find_knee(verbund, rates, args.knee_seconds, args.talk_ms, work) or rates[0]
        burst = Load(knee * args.burst_factor, args.burst_seconds, args.talk_ms, args.patience_ms)
        normal = Load(args.normal_rate, args.normal_seconds, args.talk_ms, args.patience_ms)
        result = drill(verbund, burst, normal, work)
        print("\n".join(result.lines(f"{knee:g} calls/s")))
        recovered = result.recovery_s <= 30 and result.channels_settled == 0 and result.queue_after == 0
    finally:
        stop_lab(verbund, processes)
    print(f"sipp's files: {work}")
    return 0 if recovered else 1


if __name__ == "__main__":
    sys.exit(main())
