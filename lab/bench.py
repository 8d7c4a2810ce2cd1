"""Benchmarks of the routing: `scripts/bench` (or `make bench`). Prints percentiles.

1. The routing decision in-process (pure function over the shipped rules).
2. FastAGI round trip under 50 concurrent calls: a `verbund112 serve` process
   with the real Redis, 50 stand-in Asterisk clients doing the whole exchange
   (request, GET VARIABLEs, SET VARIABLEs).
3. Calls per second through the real lab with sipp: the same Asterisk site with
   the service routing and with the plain dialplan (V112_ASK_SERVICE=0), side
   by side at rising rates; a call counts when it was answered and hung up.
   The overflow is switched off for this one (it is measured in 5.).
   The bench lab's queue has one more member, a sipp UAS that answers every
   call at once, so Asterisk and the routing are measured, not desk phones.
5. Overflow: a storm burst (4.5 calls/s for 60 s, 3x the Hildesheim peak) into
   Jena, with the overflow service off and on, side by side in one run:
   answer-time percentiles (INVITE -> 200 OK at the carrier). Jena has 6 desks,
   Gera 20 (each one call at a time, answered at once by a sipp peer), talk
   time 4 s; the dialplan's waits are the production ones, so "off" shows
   what the static overflow (local_wait_s 20 s) alone gives the callers.
   `scripts/bench --only overflow` runs just this one.
4. AML pull: the client's request to a stand-in central server on loopback
   (HTTPS with a client certificate and basic auth, answer parsed), sequential
   and 10 concurrent; the real server's latency comes on top in production.

Measured on this machine only; numbers from a 2-core VM shared with sipp.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lab import lab
from lab.processes import LOOPBACK, AsteriskSite, free_rtp_base, wait_until
from routing.decision import AmlFix, CallFacts, SiteStates, decide
from routing.location import Position
from routing.rules import load_rules
from telephony import dialplan
from tests.support import agi_client
from verbund112.rules_holder import SHIPPED_RULES

if TYPE_CHECKING:
    from aml.pull import AmlPullClient


def percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    q = statistics.quantiles(ordered, n=100, method="inclusive")
    return f"n={len(ordered)} p50={q[49]:.3f} p90={q[89]:.3f} p99={q[98]:.3f} max={ordered[-1]:.3f}"


async def bench_pull(total: int, concurrency: int) -> None:
    # the stand-in server and its run-time certificates live with the tests (dev dependency cryptography)
    from pydantic import SecretStr

    from aml.pull import AmlPullClient, AmlPullSettings
    from tests.support.aml_server import PASSWORD, USERNAME, fix, make_pki, serve

    number = "+4915112345678"
    with tempfile.TemporaryDirectory() as directory:
        pki = make_pki(Path(directory))
        async with serve(pki, lambda _: [fix(50.9272, 11.5864, 12, time_ms=int(time.time() * 1000))]) as server:
            settings = AmlPullSettings(
                enabled=True, url=server.url, client_cert=pki.client_cert, client_key=pki.client_key,
                ca_file=pki.ca, username=USERNAME, password=SecretStr(PASSWORD),
            )  # fmt: skip
            for workers in (1, concurrency):
                samples: list[float] = []
                async with AmlPullClient(settings) as client:
                    began = time.perf_counter()
                    await asyncio.gather(*(_pulls(client, number, total // workers, samples) for _ in range(workers)))
                    rate = len(samples) / (time.perf_counter() - began)
                print(f"AML pull request, {workers} at a time (ms): {percentiles(samples)}; {rate:.0f}/s", flush=True)


async def _pulls(client: AmlPullClient, number: str, count: int, samples: list[float]) -> None:
    for _ in range(count):
        started = time.perf_counter()
        answer = await client.fetch(number)
        samples.append((time.perf_counter() - started) * 1000)
        if not answer.fixes:
            raise RuntimeError("the stand-in server's fix did not come through")


def bench_decision(count: int) -> None:
    rules = load_rules(SHIPPED_RULES)
    sites = SiteStates(frozenset({"jena", "gera"}))
    rng = random.Random(112)
    numbers = ["036411234567", "0365123456", "+4915112345678", "03663123456", "garbage"]
    facts = []
    for _ in range(count):
        position = None
        if rng.random() < 0.5:
            position = Position(rng.uniform(50.3, 51.2), rng.uniform(11.0, 12.6), rng.choice([0, 20, 200, 5000]),
                                "Circle")  # fmt: skip
        aml = AmlFix(Position(50.9, 11.6, 30, "Circle"), 0.0) if rng.random() < 0.2 else None
        facts.append(CallFacts(rng.choice(["jena", "gera"]), "b", rng.choice(numbers), position, "", aml, None, 60.0))
    timings = []
    for fact in facts:
        started = time.perf_counter()
        decide(fact, rules, sites)
        timings.append((time.perf_counter() - started) * 1000)
    print(f"decision in-process (ms):            {percentiles(timings)}")


async def agi_exchange(port: int, secret: str, n: int, caller: str, geo: bool) -> float:
    variables = {dialplan.FASTAGI_SECRET: secret, "V112_CALL_ID": f"jena-{n}", "V112_CALLER": caller}
    if geo:
        variables |= {"V112_GEO_HEADER_LEN": "30", "V112_GEO_METHOD": "GPS",
                      "V112_GEO_LOCATION": 'shape="Circle",crs="2d",pos="50.6547 12.1997",radius="30"'}  # fmt: skip
    started = time.perf_counter()
    async with asyncio.timeout(5):
        await agi_client.exchange(port, variables, agi_client.request_text(uniqueid=f"jena-{n}", caller=caller))
    return (time.perf_counter() - started) * 1000


async def bench_fastagi(
    port: int, secret: str, concurrency: int, total: int, *, rate: float | None, first: int = 0
) -> str:
    """`concurrency` callers; each starts its next exchange after 1/(rate/concurrency) s, or at once (rate None).

    Call ids from `first` on: a call id asked for again keeps its first record (and is logged).
    """
    timings: list[float] = []
    counter = iter(range(first, first + total))
    interval = concurrency / rate if rate else 0.0

    async def caller_loop(offset: float) -> None:
        await asyncio.sleep(offset)
        for n in counter:
            started = time.perf_counter()
            caller = "0365123456" if n % 2 else "+4915112345678"
            timings.append(await agi_exchange(port, secret, n, caller, geo=n % 3 == 0))
            if interval:
                await asyncio.sleep(max(0.0, interval - (time.perf_counter() - started)))

    started = time.perf_counter()
    await asyncio.gather(*(caller_loop(i * interval / concurrency) for i in range(concurrency)))
    elapsed = time.perf_counter() - started
    load = f"open loop {rate:.0f}/s" if rate else "closed loop (as fast as it answers)"
    print(f"FastAGI round trip, {concurrency} concurrent, {load} (ms): {percentiles(timings)}; "
          f"{total / elapsed:.0f} exchanges/s")  # fmt: skip
    return percentiles(timings)


async def bench_aml(verbund: lab.Verbund, concurrency: int, total: int) -> None:
    """AML HTTPS deliveries into the jena service (parse, store in Redis, announce)."""
    import aiohttp

    url = f"http://{LOOPBACK}:{verbund.ports['jena'].web}/aml/v1/https"
    headers = {"Authorization": f"Bearer {verbund.aml_token}"}
    timings: list[float] = []
    failures = 0
    counter = iter(range(total))

    async def sender(client: aiohttp.ClientSession) -> None:
        nonlocal failures
        for n in counter:
            now_ms = str(int(time.time() * 1000))
            form = {"location_latitude": "50.6547", "location_longitude": "12.1997", "location_accuracy": "18",
                    "location_source": "gps", "time": now_ms, "location_time": now_ms,
                    "device_number": f"+49151{n % 500:08d}"}  # fmt: skip
            started = time.perf_counter()
            async with client.post(url, data=form, headers=headers) as response:
                await response.read()
                failures += response.status != 202
            timings.append((time.perf_counter() - started) * 1000)

    timeout = aiohttp.ClientTimeout(total=10)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as client:
        started = time.perf_counter()
        await asyncio.gather(*(sender(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    print(f"AML HTTPS intake, {concurrency} concurrent (ms): {percentiles(timings)}; "
          f"{total / elapsed:.0f} messages/s, {failures} not accepted")  # fmt: skip


async def bench_pops(verbund: lab.Verbund, rate: int, seconds: int) -> None:
    """Answer (Asterisk's AMI timestamp) -> card at the WebSocket, and AML POST -> update at the WebSocket,
    while calls arrive at `rate`/s (answered by the bench desk, whose screen is the WebSocket here)."""
    import aiohttp

    site = verbund.site("jena")
    web_base = f"http://{LOOPBACK}:{verbund.ports['jena'].web}"
    number = "+4915112340099"
    desk = lab.bench_desk(site, timeout_s=seconds + 60)
    card_ms: list[float] = []
    aml_ms: list[float] = []
    waiting: asyncio.Future[float] | None = None
    missed = 0
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as client:
            socket = await client.ws_connect(
                f"{web_base}/ws/v1/dispatchers/bench-desk",
                headers={"Authorization": f"Bearer {verbund.desk_tokens['bench-desk']}"},
            )

            async def read() -> None:
                async for message in socket:
                    now, data = time.time(), json.loads(message.data)
                    if data["type"] == "card":
                        card_ms.append((now - data["answered_at"]) * 1000)
                    elif data["type"] == "location" and waiting is not None and not waiting.done():
                        waiting.set_result(now)

            reader = asyncio.create_task(read())
            sipp = await asyncio.create_subprocess_exec(
                "sipp", f"{LOOPBACK}:{site.values.sip_port}", "-sf", str(lab.SIPP_DIR / "carrier_112.xml"),
                "-i", lab.CARRIER_ADDRESS, "-p", str(lab._free_carrier_port()), "-mp", str(free_rtp_base(10)),
                "-key", "caller", number, "-key", "uui", "00", "-r", str(rate), "-m", str(rate * seconds),
                "-d", "2000", "-timeout", f"{seconds + 30}s", "-nostdin", "-nd",
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
            headers = {"Authorization": f"Bearer {verbund.aml_token}"}
            while sipp.returncode is None:
                waiting = asyncio.get_running_loop().create_future()
                now_ms = str(int(time.time() * 1000))
                form = {
                    "location_latitude": "50.9301", "location_longitude": "11.5902", "location_accuracy": "9",
                    "location_source": "gps", "time": now_ms, "location_time": now_ms, "device_number": number,
                }  # fmt: skip
                started = time.time()
                async with client.post(f"{web_base}/aml/v1/https", data=form, headers=headers) as response:
                    await response.read()
                try:
                    arrived = await asyncio.wait_for(asyncio.shield(waiting), 2.0)
                    aml_ms.append((arrived - started) * 1000)
                except TimeoutError:
                    missed += 1  # no card yet (before the first answer) or between calls
                await asyncio.sleep(0.05)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(sipp.wait(), 0.001)
            await sipp.wait()
            await socket.close()
            reader.cancel()
    finally:
        desk.kill()
        desk.communicate()
    print(f"screen pop, answer (AMI timestamp) -> card at the WebSocket, {rate} calls/s (ms): {percentiles(card_ms)}")
    print(f"screen pop, AML POST -> update at the WebSocket (ms): {percentiles(aml_ms)}; {missed} without a card")


def server_side(verbund: lab.Verbund) -> str:
    """Cumulative share of FastAGI exchanges within each bucket, from /metrics."""
    buckets = {s.labels["le"]: s.value for s in verbund.metric_samples("jena", "verbund112_fastagi_seconds_bucket")}
    total = buckets.get("+Inf", 0.0) or 1.0
    return ", ".join(f"≤{float(b) * 1000:g} ms {count / total:.1%}" for b, count in buckets.items()
                     if b != "+Inf" and 0.0005 <= float(b) <= 0.01)  # fmt: skip


def start_service(verbund: lab.Verbund, name: str, directory: Path) -> subprocess.Popen[bytes]:
    return lab._start_service(verbund, name, directory)


def sipp_rate(verbund: lab.Verbund, rate: int, seconds: int, work: Path, label: str) -> dict[str, float]:
    """One sipp run at a fixed rate; returns successful/failed counts and setup-time percentiles."""
    site = verbund.site("jena")
    calls = rate * seconds
    prefix = work / f"{label}-{rate}"
    args = [
        "sipp", f"{LOOPBACK}:{site.values.sip_port}", "-sf", str(lab.SIPP_DIR / "carrier_112.xml"),
        "-i", lab.CARRIER_ADDRESS, "-p", str(lab._free_carrier_port()), "-mp", str(free_rtp_base(10)),
        # a Jena number: the call stays at jena, where the bench queue member answers
        "-key", "caller", "036411234567", "-key", "uui", "00",
        "-r", str(rate), "-m", str(calls), "-l", str(rate * 4), "-d", "1000",
        "-timeout", f"{seconds + 30}s", "-nostdin", "-nd", "-recv_timeout", "10000",
        "-trace_stat", "-stf", f"{prefix}.csv", "-trace_rtt", "-rtt_freq", "1",
    ]  # fmt: skip
    subprocess.run(args, cwd=work, capture_output=True, check=False, timeout=seconds + 60)
    with open(f"{prefix}.csv") as handle:
        rows = list(csv.DictReader(handle, delimiter=";"))
    last = rows[-1]
    result = {"ok": float(last["SuccessfulCall(C)"]), "failed": float(last["FailedCall(C)"])}
    rtt_files = list(work.glob("carrier_112_*_rtt.csv"))
    setup = []
    for rtt in rtt_files:
        with rtt.open() as handle:
            setup += [float(row["response_time_ms"]) for row in csv.DictReader(handle, delimiter=";")]
        rtt.unlink()
    if setup:
        q = statistics.quantiles(setup, n=100, method="inclusive")
        result |= {"p50": q[49], "p99": q[98]}
    return result


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (/proc/<pid>/stat, fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_cps(verbund: lab.Verbund, rates: list[int], seconds: int, service_pid: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="v112-bench-"))
    site = verbund.site("jena")
    print(f"calls/s through Asterisk jena, {seconds} s per rate, talk 1 s (answer time ms = INVITE→200; "
          "cpu = jena service's user+sys CPU ms per call: per call routed, for plain per call placed):")  # fmt: skip
    print(f"  {'rate':>4}  {'plain ok/failed':>16} {'p50':>6} {'p99':>6} {'cpu':>5}   "
          f"{'routed ok/failed':>16} {'p50':>6} {'p99':>6} {'cpu':>5}  ok ratio")  # fmt: skip
    best = {"plain": 0, "routed": 0}
    desk = lab.bench_desk(site, timeout_s=len(rates) * 2 * (seconds + 40))
    # This measures the routing: the overflow would move callers who wait under overload to
    # Gera's bench member, whose peer does not run here.
    rules = verbund.rules_file.read_text()
    for name in ("jena", "gera"):
        _put_rules(verbund, rules.replace("{enabled: true,", "{enabled: false,"), name)
    try:
        _run_rates(verbund, rates, seconds, work, best, service_pid=service_pid)
    finally:
        desk.kill()
        desk.communicate()
        for name in ("jena", "gera"):
            _put_rules(verbund, rules, name)
    site.cli("dialplan set global V112_ASK_SERVICE 1")
    ratio = best["routed"] / best["plain"] if best["plain"] else float("nan")
    print(f"  highest rate without a failed call: plain {best['plain']}/s, routed {best['routed']}/s ({ratio:.2f}x)")


def _wait_idle(site: AsteriskSite) -> None:
    """No backlog carried into the next run: wait (at most 60 s) until Asterisk has no channel."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        count = site.cli("core show channels count")
        if count.strip().startswith("0 active channels"):
            return
        time.sleep(0.5)
    print(f"  (Asterisk still busy before the next run: {count.splitlines()[0] if count else '?'})")
    # what the channels are doing (concise: channel!context!exten!prio!state!app!data!...)
    apps: dict[str, int] = {}
    for line in site.cli("core show channels concise").splitlines():
        fields = line.split("!")
        if len(fields) > 5:
            key = f"{fields[0].split('-')[0]} {fields[1]} {fields[4]} {fields[5]}"
            apps[key] = apps.get(key, 0) + 1
    for key, n in sorted(apps.items(), key=lambda item: -item[1])[:6]:
        print(f"    {n:>4} x {key}")


def _run_rates(
    verbund: lab.Verbund, rates: list[int], seconds: int, work: Path, best: dict[str, int], *, service_pid: int
) -> None:
    site = verbund.site("jena")
    cpu: dict[str, list[float]] = {"plain": [], "routed": []}  # CPU seconds and calls, summed over the rates
    for rate in rates:
        row = {}
        for mode in ("plain", "routed"):
            site.cli(f"dialplan set global V112_ASK_SERVICE {0 if mode == 'plain' else 1}")
            _wait_idle(site)
            cpu_before, routed_before = process_cpu_seconds(service_pid), _routed(verbund)
            row[mode] = result = sipp_rate(verbund, rate, seconds, work, mode)
            _wait_idle(site)  # the service's work for the last calls (hangups, records) belongs to this run
            used = process_cpu_seconds(service_pid) - cpu_before
            calls = _routed(verbund) - routed_before if mode == "routed" else result["ok"] + result["failed"]
            result["cpu_ms"] = used * 1000 / calls if calls else float("nan")
            if result["failed"] == 0 and result["ok"] >= rate * seconds:
                best[mode] = rate
                cpu[mode] += [used, calls]  # a run with failed calls (past the knee) says little per call
        cells = []
        for mode in ("plain", "routed"):
            r = row[mode]
            cells.append(f"{int(r['ok']):>7}/{int(r['failed']):<8} {r.get('p50', float('nan')):>6.1f} "
                         f"{r.get('p99', float('nan')):>6.1f} {r['cpu_ms']:>5.1f}")  # fmt: skip
        ratio = row["routed"]["ok"] / row["plain"]["ok"] if row["plain"]["ok"] else float("nan")
        print(f"  {rate:>4}  {cells[0]}   {cells[1]}  {ratio:.2f}", flush=True)
    for mode, sums in cpu.items():
        used, calls = sum(sums[0::2]), sum(sums[1::2])
        print(f"  jena service CPU, {mode}, rates without a failed call: {used:.2f} s for {int(calls)} calls = "
              f"{used * 1000 / calls if calls else float('nan'):.2f} ms per call", flush=True)  # fmt: skip


def _routed(verbund: lab.Verbund) -> int:
    """FastAGI route requests the jena service has answered so far."""
    return int(_status(verbund, "jena")["fastagi"]["answered"])


OVERFLOW_DESKS = {"jena": 6, "gera": 20}


def bench_overflow(rate: float = 4.5, seconds: int = 60, talk_ms: int = 4000) -> None:
    verbund = lab.start_verbund(
        f"bench-overflow-{os.getpid()}", log=print, bench=True, bench_desks=OVERFLOW_DESKS,
        waits=lab.PRODUCTION_WAITS,
    )  # fmt: skip
    directory = lab.lab_dir() / verbund.instance
    work = Path(tempfile.mkdtemp(prefix="v112-bench-overflow-"))
    peers = [lab.bench_desk(verbund.site(name), timeout_s=4 * (seconds + 200)) for name in ("jena", "gera")]
    services = []
    try:
        services = [start_service(verbund, name, directory) for name in ("jena", "gera")]
        wait_until(lambda: _status(verbund, "jena")["partner"]["reporting"], 10, "jena sees gera")
        print(f"overflow: {rate}/s into Jena for {seconds} s, talk {talk_ms / 1000:g} s, desks {OVERFLOW_DESKS}; "
              "answer time in s (INVITE -> 200 OK):")  # fmt: skip
        rules = verbund.rules_file.read_text()
        results = {}
        for mode in ("off", "on"):
            enabled = "true" if mode == "on" else "false"
            _put_rules(verbund, rules.replace("jena: {enabled: true,", f"jena: {{enabled: {enabled},"))
            _wait_idle(verbund.site("jena"))
            _wait_idle(verbund.site("gera"))
            moves_before = _moves(verbund)
            results[mode] = _burst(verbund, rate, seconds, talk_ms, work / mode)
            results[mode]["moves"] = _moves(verbund) - moves_before
        for mode, r in results.items():
            print(f"  overflow {mode:>3}: {int(r['ok'])} answered, {int(r['failed'])} failed, moved {int(r['moves'])}; "
                  f"p50 {r['p50']:.1f} p90 {r['p90']:.1f} p95 {r['p95']:.1f} p99 {r['p99']:.1f} max {r['max']:.1f}; "
                  f"answered within 10 s: {r['within_10s']:.1%}", flush=True)  # fmt: skip
    finally:
        for process in [*services, *peers]:
            process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=15)
        verbund.stop()


def _status(verbund: lab.Verbund, site: str, path: str = "/api/v1/status") -> dict[str, Any]:
    request = urllib.request.Request(
        f"http://{LOOPBACK}:{verbund.ports[site].web}{path}", headers={"Authorization": f"Bearer {verbund.read_token}"}
    )
    with urllib.request.urlopen(request, timeout=2) as response:
        answer: dict[str, Any] = json.loads(response.read())
        return answer


def _moves(verbund: lab.Verbund) -> int:
    view = _status(verbund, "jena", "/api/v1/supervisor")
    return int(view["overflow"]["last_hour"].get("jena->gera", {}).get("moved", 0))


def _put_rules(verbund: lab.Verbund, text: str, site: str = "jena") -> None:
    request = urllib.request.Request(
        f"http://{LOOPBACK}:{verbund.ports[site].web}/api/v1/rules", data=text.encode(), method="PUT",
        headers={"Authorization": f"Bearer {verbund.web_token}", "Content-Type": "application/yaml"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=5) as response:
        response.read()


def _burst(verbund: lab.Verbund, rate: float, seconds: int, talk_ms: int, work: Path) -> dict[str, float]:
    """sipp at `rate` calls/s into Jena; every call's answer time from its INVITE->200 round trip."""
    work.mkdir(parents=True)
    site = verbund.site("jena")
    calls = round(rate * seconds)
    args = [
        "sipp", f"{LOOPBACK}:{site.values.sip_port}", "-sf", str(lab.SIPP_DIR / "carrier_112.xml"),
        "-i", lab.CARRIER_ADDRESS, "-p", str(lab._free_carrier_port()), "-mp", str(free_rtp_base(10)),
        "-key", "caller", "036411234567", "-key", "uui", "00",
        "-r", str(round(rate * 10)), "-rp", "10000", "-m", str(calls), "-l", str(calls), "-d", str(talk_ms),
        "-timeout", f"{seconds + 240}s", "-nostdin", "-nd", "-recv_timeout", "180000",
        "-trace_stat", "-stf", "stat.csv", "-trace_rtt", "-rtt_freq", "1",
    ]  # fmt: skip
    subprocess.run(args, cwd=work, capture_output=True, check=False, timeout=seconds + 300)
    with (work / "stat.csv").open() as handle:
        last = list(csv.DictReader(handle, delimiter=";"))[-1]
    answers = []
    for rtt in work.glob("*_rtt.csv"):
        with rtt.open() as handle:
            answers += [float(row["response_time_ms"]) / 1000 for row in csv.DictReader(handle, delimiter=";")]
    q = statistics.quantiles(answers, n=100, method="inclusive")
    return {
        "ok": float(last["SuccessfulCall(C)"]), "failed": float(last["FailedCall(C)"]),
        "p50": q[49], "p90": q[89], "p95": q[94], "p99": q[98], "max": max(answers),
        "within_10s": sum(a <= 10 for a in answers) / calls,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--decisions", type=int, default=20000)
    parser.add_argument("--agi-calls", type=int, default=5000)
    parser.add_argument("--aml-messages", type=int, default=5000)
    parser.add_argument("--pull-requests", type=int, default=2000)
    parser.add_argument("--rates", default="20,40,60,80,100")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--skip-lab", action="store_true", help="only the in-process benchmarks (decision, AML pull)")
    parser.add_argument("--only", choices=["overflow", "cps", "fastagi"], help="run just this benchmark")
    args = parser.parse_args(argv)
    if args.only == "overflow":
        bench_overflow()
        return 0

    if args.only is None:
        bench_decision(args.decisions)
        asyncio.run(bench_pull(args.pull_requests, 10))
    if args.skip_lab:
        return 0
    verbund = lab.start_verbund(f"bench-{os.getpid()}", log=print, bench=True, rtp_ports=lab.BENCH_RTP_PORTS)
    directory = lab.lab_dir() / verbund.instance
    services = []
    try:
        for name in ("jena", "gera"):
            services.append(start_service(verbund, name, directory))
        status_url = f"http://{LOOPBACK}:{verbund.ports['jena'].web}/api/v1/status"

        def partner_seen() -> bool:
            request = urllib.request.Request(status_url, headers={"Authorization": f"Bearer {verbund.read_token}"})
            with urllib.request.urlopen(request, timeout=1) as response:
                return bool(json.loads(response.read())["partner"]["reporting"])

        wait_until(partner_seen, 10, "jena sees gera")
        if args.only == "cps":
            bench_cps(verbund, [int(rate) for rate in args.rates.split(",")], args.seconds, services[0].pid)
            return 0
        port, secret = verbund.ports["jena"].fastagi, verbund.site("jena").secrets.fastagi_secret
        asyncio.run(bench_fastagi(port, secret, 50, args.agi_calls, rate=100.0))
        print(f"  server side (the service's own histogram): {server_side(verbund)}")
        asyncio.run(bench_fastagi(port, secret, 50, args.agi_calls, rate=None, first=args.agi_calls))
        if args.only == "fastagi":
            return 0
        asyncio.run(bench_aml(verbund, 20, args.aml_messages))
        bench_cps(verbund, [int(rate) for rate in args.rates.split(",")], args.seconds, services[0].pid)
        asyncio.run(bench_pops(verbund, rate=20, seconds=args.seconds))
    finally:
        for process in services:
            process.terminate()
            process.wait(timeout=15)
        verbund.stop()
    if args.only is None:
        bench_overflow()
    return 0


if __name__ == "__main__":
    sys.exit(main())
