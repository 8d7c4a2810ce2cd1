"""Where the service's CPU goes per routed call: `python -m lab.profile` (a bench lab of its own).

Starts the bench lab (both sites, the bench desk answering every call) with the services
of Jena and Gera, a dispatcher screen on the bench desk (so cards are built and sent),
measures the Jena service's CPU while idle and under a sipp burst of routed calls, and,
with `--py-spy PATH` (py-spy is not a dependency: `pip install py-spy` anywhere), samples the
service during the burst and prints the functions that cost most (own time and with callees).

With `--compare CHECKOUT` (another checkout with its own `.venv`, e.g. /work/main) Jena's
service runs this checkout's code and that one's in turn, `--repeat` times each, in the
same lab: a before/after on a shared machine, side by side. The order alternates by round
(this, other; other, this; ...): whichever runs first in a round was measured ~0.5-0.9 ms per
call dearer, so an even `--repeat` gives each checkout both places.

    python -m lab.profile --rate 40 --seconds 20 --py-spy /tmp/pyspy-venv/bin/py-spy
    python -m lab.profile --rate 40 --seconds 20 --py-spy /tmp/pyspy-venv/bin/py-spy --native
    python -m lab.profile --rate 40 --seconds 20 --compare /work/main --repeat 2
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import functools
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from lab import lab
from lab.bench import _status, bench_fastagi, process_cpu_seconds
from lab.processes import LOOPBACK, free_rtp_base, wait_until

IDLE_S = 10.0
AGI_EXCHANGES = 3000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=int, default=40)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--py-spy", dest="py_spy", help="path of a py-spy executable: sample the service")
    parser.add_argument("--native", action="store_true",
                        help="with --py-spy: C frames too (system calls, uvloop); the service is paused for each "
                             "sample, so its CPU figure is dearer; idle waits (epoll_pwait) are left out")  # fmt: skip
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--compare", type=Path, help="another checkout (with .venv): its service in turn with ours")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args(argv)
    checkouts = [("this", lab.REPO)] + ([("other", args.compare.resolve())] if args.compare else [])
    verbund = lab.start_verbund(f"profile-{os.getpid()}", log=print, bench=True)
    directory = lab.lab_dir() / verbund.instance
    work = Path(tempfile.mkdtemp(prefix="v112-profile-"))
    desk = lab.bench_desk(verbund.site("jena"), timeout_s=len(checkouts) * args.repeat * (args.seconds + 200))
    gera = None
    results: list[tuple[str, int, tuple[float, ...], str]] = []
    try:
        gera = lab._start_service(verbund, "gera", directory)
        for round_ in range(1, args.repeat + 1):
            for label, checkout in checkouts if round_ % 2 else checkouts[::-1]:
                python = str(checkout / ".venv/bin/python")
                jena = lab._start_service(verbund, "jena", directory, python=python, checkout=checkout)
                try:
                    wait_until(lambda: _status(verbund, "jena")["partner"]["reporting"], 10, "jena sees gera")
                    print(f"-- {label} ({checkout}), round {round_}")
                    measure = functools.partial(_measure, verbund, jena.pid, args, work)
                    figures = asyncio.run(_with_screen(verbund, measure))
                    port, secret = verbund.ports["jena"].fastagi, verbund.site("jena").secrets.fastagi_secret
                    first = len(results) * AGI_EXCHANGES  # call ids not asked for before
                    agi = asyncio.run(bench_fastagi(port, secret, 50, AGI_EXCHANGES, rate=100.0, first=first))
                    results.append((label, round_, figures, agi))
                finally:
                    _stop(jena)
    finally:
        for process in [gera, desk]:
            if process is not None:
                _stop(process)
        verbund.stop()
    if len(results) > 1:
        print(f"side by side: ms CPU per routed call at {args.rate}/s for {args.seconds} s (user + sys); "
              f"FastAGI round trip (ms) of {AGI_EXCHANGES} stand-in exchanges, 50 concurrent, at 100/s:")  # fmt: skip
        for label, round_, (per_call, user, system, idle), agi in results:
            print(f"  {label:>5} round {round_}: {per_call:5.2f} ms ({user:.2f} + {system:.2f}); "
                  f"idle {idle:.1f} ms/s; FastAGI {agi}")  # fmt: skip
    return 0


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=15)


async def _with_screen(verbund: lab.Verbund, measure: Callable[[], tuple[float, ...]]) -> tuple[float, ...]:
    """The bench desk's screen stays connected (and read) while `measure` runs in a thread."""
    import aiohttp

    url = f"http://{LOOPBACK}:{verbund.ports['jena'].web}/ws/v1/dispatchers/bench-desk"
    headers = {"Authorization": f"Bearer {verbund.desk_tokens['bench-desk']}"}
    cards = 0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as client:
        socket = await client.ws_connect(url, headers=headers)

        async def read() -> None:
            nonlocal cards
            async for message in socket:
                cards += '"type": "card"' in message.data or '"type":"card"' in message.data

        reader = asyncio.create_task(read())
        figures = await asyncio.to_thread(measure)
        reader.cancel()
        await socket.close()
    print(f"cards at the bench desk's screen: {cards}")
    return figures


def _cpu(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of a process so far (/proc/<pid>/stat, fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def _measure(verbund: lab.Verbund, pid: int, args: argparse.Namespace, work: Path) -> tuple[float, ...]:
    """The burst: (ms CPU per routed call, of it user, of it system, idle ms CPU per second)."""
    site = verbund.site("jena")
    before = process_cpu_seconds(pid)
    time.sleep(IDLE_S)
    idle = (process_cpu_seconds(pid) - before) / IDLE_S
    print(f"jena service idle: {idle * 1000:.1f} ms CPU per second")
    sampler = None
    if args.py_spy:
        # py-spy reads C stacks only of a stopped process: --native and --nonblocking exclude each other
        how = ["--native"] if args.native else ["--nonblocking"]
        sampler = subprocess.Popen(
            [args.py_spy, "record", "--pid", str(pid), "--rate", "200", "--format", "raw", *how,
             "--output", str(work / "stacks.txt"), "--duration", str(args.seconds + 5)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(1)
    routed, counted = int(_status(verbund, "jena")["fastagi"]["answered"]), _ami_events(verbund)
    started, (user_before, system_before) = time.monotonic(), _cpu(pid)
    sipp = [
        "sipp", f"{LOOPBACK}:{site.values.sip_port}", "-sf", str(lab.SIPP_DIR / "carrier_112.xml"),
        "-i", lab.CARRIER_ADDRESS, "-p", str(lab._free_carrier_port()), "-mp", str(free_rtp_base(10)),
        "-key", "caller", "036411234567", "-key", "uui", "00",
        "-r", str(args.rate), "-m", str(args.rate * args.seconds), "-l", str(args.rate * 4), "-d", "1000",
        "-timeout", f"{args.seconds + 30}s", "-nostdin", "-nd", "-recv_timeout", "10000",
    ]  # fmt: skip
    subprocess.run(sipp, cwd=work, capture_output=True, check=False, timeout=args.seconds + 60)
    wait_until(lambda: site.cli("core show channels count").strip().startswith("0 active"), 60, "calls ended")
    (user, system), elapsed = _cpu(pid), time.monotonic() - started
    user, system = user - user_before, system - system_before
    used = user + system
    calls = int(_status(verbund, "jena")["fastagi"]["answered"]) - routed
    busy = used - idle * elapsed
    after = _ami_events(verbund)
    per_call = {kind: (after[kind] - counted.get(kind, 0)) / max(calls, 1) for kind in after}
    print(f"typed AMI events per call: {sum(per_call.values()):.1f} (" + ", ".join(
        f"{kind} {n:.1f}" for kind, n in sorted(per_call.items(), key=lambda item: -item[1]) if n) + ")")  # fmt: skip
    print(f"burst {args.rate}/s for {args.seconds} s: {calls} calls routed, {used:.2f} s CPU in {elapsed:.1f} s = "
          f"{used * 1000 / max(calls, 1):.2f} ms per call ({busy * 1000 / max(calls, 1):.2f} ms without the idle "
          f"share); user {user:.2f} s, system {system:.2f} s")  # fmt: skip
    if sampler is not None:
        sampler.wait(timeout=args.seconds + 60)
        print_top(work / "stacks.txt", args.top)
    per = 1000 / max(calls, 1)
    return used * per, user * per, system * per, idle * 1000


def _ami_events(verbund: lab.Verbund) -> dict[str, float]:
    """verbund112_ami_call_events by kind, from the jena service's /metrics."""
    return {s.labels["kind"]: s.value for s in verbund.metric_samples("jena", "verbund112_ami_call_events_total")}


def print_top(stacks: Path, top: int) -> None:
    """Own and inclusive sample shares per function from py-spy's collapsed stacks."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in stacks.read_text().splitlines():
        frames, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        names = [_short(frame) for frame in frames.split(";")]
        if names[-1].startswith("epoll_pwait "):
            continue  # native stacks: the loop waiting for work, not work
        total += count
        own[names[-1]] += count
        for name in set(names):
            inclusive[name] += count
    print(f"py-spy: {total} samples of the service on CPU")
    for title, counter in (("own time", own), ("with callees", inclusive)):
        print(f"  top {top} by {title}:")
        for name, count in counter.most_common(top):
            print(f"    {count / total:6.1%}  {name}")


def _short(frame: str) -> str:
    """`function (path/to/module.py:line)` -> `function (module path)`, lines dropped so a function adds up."""
    name, _, where = frame.partition(" (")
    path = where.removesuffix(")").rsplit(":", 1)[0]  # a C frame has no line: `write (libc.so.6)`
    for marker in ("site-packages/", "/lib/python3", "/wt-headroom/", "/work/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{name} ({path})"


if __name__ == "__main__":
    sys.exit(main())
