"""Simulated dispatcher desks: pyVoIP phones that register and answer 112 calls.

Run as its own process (pyVoIP works with threads):

    python -m lab.desks --server 127.0.0.1:5060 [--address 127.0.0.1] --seat jena-d1:PASSWORD:SIPPORT:RTPPORT ...

It prints one JSON object per line on stdout, so a test can wait for the
event it needs instead of sleeping: {"event": "registered", "seat": ...},
{"event": "answered", "seat": ..., "caller": ..., "asserted": ..., "privacy": ...}
(the numbers in From and P-Asserted-Identity, the Privacy header), {"event": "ended", ...}.
A desk answers every call and keeps it until the caller hangs up (or
--max-talk seconds pass). SIGTERM unregisters the desks and exits.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import signal
import socket
import sys
import threading
import time
from typing import Any

import pyVoIP
from pyVoIP.VoIP import CallState, PhoneStatus, VoIPCall, VoIPPhone

_print_lock = threading.Lock()
_CALLER = re.compile(r"sip:([+0-9]+)@")


def emit(**fields: Any) -> None:
    fields["at"] = time.time()
    with _print_lock:
        sys.stdout.write(json.dumps(fields) + "\n")
        sys.stdout.flush()


def _caller_number(call: VoIPCall, header_name: str = "From") -> str:
    """The number in a header of the INVITE (pyVoIP parses From; others stay text), or ""."""
    header = call.request.headers.get(header_name, {})
    raw = header.get("raw", "") if isinstance(header, dict) else str(header)
    match = _CALLER.search(raw)
    return match.group(1) if match else ""


def make_answerer(seat: str, max_talk: float):  # type: ignore[no-untyped-def]
    def answer(call: VoIPCall) -> None:
        caller = _caller_number(call)
        try:
            call.answer()
        except Exception as exc:  # the call may have been cancelled meanwhile
            emit(event="answer_failed", seat=seat, caller=caller, error=str(exc))
            return
        emit(
            event="answered", seat=seat, caller=caller, call_id=call.request.headers.get("Call-ID", ""),
            # what a desk phone shows for a caller with CLIR (the network's P-Asserted-Identity)
            asserted=_caller_number(call, "P-Asserted-Identity"), privacy=str(call.request.headers.get("Privacy", "")),
        )  # fmt: skip
        deadline = time.monotonic() + max_talk
        while call.state == CallState.ANSWERED and time.monotonic() < deadline:
            time.sleep(0.05)
        if call.state == CallState.ANSWERED:
            call.hangup()
        emit(event="ended", seat=seat, caller=caller)

    return answer


def answer_options(phone: VoIPPhone) -> None:
    """Answer SIP OPTIONS (Asterisk's qualify) with 200 OK, as desk phones do: pyVoIP 1.6.8
    cannot parse an OPTIONS request and drops it, and the queue would skip the desk as dead."""
    if "OPTIONS" not in pyVoIP.SIPCompatibleMethods:
        pyVoIP.SIPCompatibleMethods.append("OPTIONS")  # the list SIPMessage checks request methods in
    sip = phone.sip
    handle = sip.parse_message

    def parse_message(message: Any) -> None:  # a pyVoIP.SIP.SIPMessage, request or response
        if getattr(message, "method", None) == "OPTIONS":  # responses have no method
            sip.out.sendto(sip.gen_ok(message).encode("utf8"), (sip.server, sip.port))
        else:
            handle(message)

    sip.parse_message = parse_message  # type: ignore[method-assign]


def registered(phone: VoIPPhone, within: float = 10.0) -> bool:
    """Registered, or given up. Asterisk's first OPTIONS (qualify) can overtake its 200 OK to the
    REGISTER; pyVoIP then takes the OPTIONS for the answer, fails this try and tries again at
    once (three tries before it gives up): wait for that, do not judge the first try."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        status = phone.get_status()
        if status in (PhoneStatus.REGISTERED, PhoneStatus.FAILED, PhoneStatus.INACTIVE):
            return status == PhoneStatus.REGISTERED
        time.sleep(0.05)
    return False


def main(argv: list[str] | None = None) -> int:
    import os

    pyVoIP.DEBUG = bool(os.environ.get("DESK_DEBUG"))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", required=True, help="Asterisk SIP address host:port")
    parser.add_argument(
        "--seat", action="append", required=True,
        help="seat:password:sip_port:rtp_port (RTP uses 100 ports from rtp_port), repeatable",
    )  # fmt: skip
    parser.add_argument("--max-talk", type=float, default=600.0)
    parser.add_argument("--address", default="127.0.0.1", help="the desks' own IP address")
    args = parser.parse_args(argv)
    host, _, port = args.server.rpartition(":")

    phones = []
    for seat_spec in args.seat:
        seat, password, sip_port, rtp_port = seat_spec.split(":")
        phone = VoIPPhone(
            host,
            int(port),
            seat,
            password,
            myIP=args.address,
            callCallback=make_answerer(seat, args.max_talk),
            sipPort=int(sip_port),
            rtpPortLow=int(rtp_port),
            rtpPortHigh=int(rtp_port) + 99,
        )
        answer_options(phone)
        phone.start()
        phones.append((seat, phone))
        if registered(phone):
            emit(event="registered", seat=seat)
        else:
            emit(event="register_failed", seat=seat, status=str(phone.get_status()))

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    emit(event="ready", seats=[seat for seat, _ in phones])
    stop.wait()
    for seat, phone in phones:
        if unregister(phone):
            emit(event="unregistered", seat=seat)
        else:
            emit(event="unregister_failed", seat=seat)
    return 0


def unregister(phone: VoIPPhone) -> bool:
    """VoIPPhone.stop() with retries: pyVoIP 1.6.8 gives up on the first stray
    packet (a late ACK or BYE) that arrives instead of the REGISTER answer."""
    for call in list(phone.calls.values()):
        with contextlib.suppress(Exception):
            call.hangup()
    sip = phone.sip
    sip.NSD = False  # stops the receive thread
    if sip.registerThread:
        sip.registerThread.cancel()
    done = False
    for _ in range(5):
        _drain(sip.s)
        try:
            if sip.deregister():
                done = True
                break
        except Exception:  # pyVoIP raises for many stray answers
            time.sleep(0.1)
    sip._close_sockets()
    return done


def _drain(sock: socket.socket) -> None:
    """Drop packets that arrived for the finished calls (late ACK, BYE retransmits)."""
    time.sleep(0.2)  # let the receive thread see NSD=False and leave the socket alone
    sock.setblocking(False)
    with contextlib.suppress(BlockingIOError, OSError):
        while sock.recv(65536):
            pass


if __name__ == "__main__":
    sys.exit(main())
