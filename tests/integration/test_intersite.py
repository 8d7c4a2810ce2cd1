"""The inter-site trunk in the real lab: TLS with mutual certificates, nothing else gets in.

The partner's endpoint is recognised by its address; only the TLS transport
proves the leg came from the partner's certificate. A UDP INVITE with a forged
source address must not reach the queue, and a TLS client without a
certificate of the Verbund CA gets no connection.
"""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
import struct
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lab import lab, pki
from telephony import dialplan, events
from tests.conftest import next_event, place_call

pytestmark = pytest.mark.lab

FORGED_SOURCE_PORT = 5099  # any port: the forged packet only names the partner's address


def partner_identity(site: lab.AsteriskSite) -> tuple[str, int]:
    """The address (and port, if any) by which the site's running Asterisk recognises its partner."""
    pjsip = (site.host_dir / "etc" / "pjsip.conf").read_text()
    sections = [part.split("\n[")[0] for part in pjsip.split("[intersite]")[1:]]
    section = next(part for part in sections if "type = identify" in part)
    match = re.search(r"^match = ([0-9.]+)(?::(\d+))?$", section, re.M)
    assert match is not None, section
    return match[1], int(match[2] or FORGED_SOURCE_PORT)


@dataclass(frozen=True)
class Handover:
    """An INVITE as the partner's handover looks (to the site's partner_exten), and its CANCEL and ACK."""

    target: str  # host:port
    exten: str
    source: tuple[str, int]
    transport: str  # UDP or TLS
    call_id: str  # X-Verbund-Call-Id
    position: int
    partner: str
    branch: str = field(default_factory=lambda: f"z9hG4bK{uuid.uuid4().hex}")
    sip_call_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    def _headers(self, method: str) -> list[str]:
        return [
            f"{method} sip:{self.exten}@{self.target} SIP/2.0",
            f"Via: SIP/2.0/{self.transport} {self.source[0]}:{self.source[1]};branch={self.branch}",
            "Max-Forwards: 70",
            f"From: <sip:+4936419999999@{self.source[0]}>;tag={self.tag}",
            f"To: <sip:{self.exten}@{self.target}>",
            f"Call-ID: {self.sip_call_id}@{self.source[0]}",
            f"CSeq: 1 {method}",
        ]

    def invite(self) -> bytes:
        sdp = (
            "v=0\r\no=- 1 1 IN IP4 {0}\r\ns=-\r\nc=IN IP4 {0}\r\nt=0 0\r\n"
            "m=audio 40000 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n"
        ).format(self.source[0])
        headers = [
            *self._headers("INVITE"),
            f"Contact: <sip:ghost@{self.source[0]}:{self.source[1]};transport={self.transport.lower()}>",
            f"X-Verbund-Call-Id: {self.call_id}",
            f"X-Verbund-Site: {self.partner}",
            f"X-Verbund-Queue-Position: {self.position}",
            "Content-Type: application/sdp",
            f"Content-Length: {len(sdp)}",
        ]
        return ("\r\n".join(headers) + "\r\n\r\n" + sdp).encode()

    def cancel(self) -> bytes:
        return ("\r\n".join([*self._headers("CANCEL"), "Content-Length: 0"]) + "\r\n\r\n").encode()


def handover(site: lab.AsteriskSite, source: tuple[str, int], transport: str, call_id: str, position: int) -> Handover:
    if transport == "UDP":
        target = f"{lab.LOOPBACK}:{site.values.sip_port}"
    else:
        target = f"{site.values.intersite_address}:{site.values.intersite_port}"
    return Handover(target, site.values.partner_exten, source, transport, call_id, position, site.values.partner)


def send_spoofed_udp(source: tuple[str, int], destination: tuple[str, int], payload: bytes) -> None:
    """A UDP datagram with a source address and port of our choosing (a raw socket: needs root)."""
    udp_length = 8 + len(payload)
    udp = struct.pack("!HHHH", source[1], destination[1], udp_length, 0) + payload  # checksum 0: none
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + udp_length, 0, 0, 64, socket.IPPROTO_UDP, 0,
        socket.inet_aton(source[0]), socket.inet_aton(destination[0]),
    )  # fmt: skip
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW) as raw:
        raw.sendto(ip + udp, (destination[0], 0))


async def test_a_forged_udp_leg_claiming_a_waiting_call_and_place_one_never_enters_the_queue(
    verbund: lab.Verbund, start_service, start_desks
) -> None:
    jena = await start_service("jena")
    await start_desks("jena", ["jena-d1"])
    site = verbund.site("jena")
    with jena.hub.subscribe() as seen:
        talking = asyncio.create_task(place_call(verbund, "jena", "+4936411120001", talk_ms=12000))
        await next_event(seen, events.DispatcherAnswered, lambda e: e.dispatcher == "jena-d1")
        waiting_call = asyncio.create_task(place_call(verbund, "jena", "+4936411120002", talk_ms=500))
        waiting = await next_event(seen, events.CallerJoinedQueue, lambda e: e.caller_number == "+4936411120002")
        source = partner_identity(site)
        forged = handover(site, source, "UDP", waiting.call_id, position=1)
        send_spoofed_udp(source, (lab.LOOPBACK, site.values.sip_port), forged.invite())

        def forged_leg(event: events.SiteEvent) -> bool:
            channel = getattr(event, "channel", "")
            return isinstance(event, events.CallerJoinedQueue | events.ChannelHungUp) and channel.startswith(
                dialplan.INTERSITE_CHANNEL_PREFIX
            )

        outcome = await next_event(seen, object, forged_leg, within=10)
        assert isinstance(outcome, events.ChannelHungUp), f"the forged leg entered the queue: {outcome}"
    # the real caller kept their place and is answered once the desk is free
    assert await talking == 0
    assert await waiting_call == 0


def tls_client(certificate: tuple[Path, Path] | None, ca: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(ca)
    context.check_hostname = False  # the address is checked by the CA's signature on the lab's certificate
    if certificate is not None:
        context.load_cert_chain(*certificate)
    return context


def sip_options_over_tls(address: str, port: int, context: ssl.SSLContext, source: str) -> bytes:
    """What the trunk answers to an OPTIONS over TLS from `source`: b"" if it refused the connection."""
    request = (
        f"OPTIONS sip:{address}:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/TLS {source}:5061;branch=z9hG4bK{uuid.uuid4().hex}\r\n"
        f"From: <sip:probe@{source}>;tag=1\r\nTo: <sip:{address}>\r\nCall-ID: {uuid.uuid4().hex}\r\n"
        "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    with socket.create_connection((address, port), timeout=5, source_address=(source, 0)) as plain:
        try:
            with context.wrap_socket(plain) as tls:
                tls.sendall(request)
                return tls.recv(4096)
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
            return b""


@pytest.mark.parametrize("client", ["no certificate", "a certificate of another CA"])
async def test_a_tls_client_without_a_verbund_certificate_is_refused(
    verbund: lab.Verbund, tmp_path: Path, client: str
) -> None:
    site = verbund.site("jena")
    ca = verbund.certificates["jena"].ca
    address, port = site.values.intersite_address, site.values.intersite_port
    partner_address = verbund.site("gera").values.intersite_address
    certificate = None
    if client != "no certificate":
        stranger_ca = pki.issue("somebody else's CA", None, ca=True)
        stranger = pki.issue("asterisk-gera", (stranger_ca[0].subject, stranger_ca[1]), alt_names=[partner_address])
        certificate = pki.write(tmp_path, "stranger", *stranger)
    refused = await asyncio.to_thread(sip_options_over_tls, address, port, tls_client(certificate, ca), partner_address)
    assert refused == b""
    # the same request with the partner's own certificate is answered: it was the certificate
    mine = verbund.certificates["gera"]
    answered = await asyncio.to_thread(
        sip_options_over_tls, address, port, tls_client((mine.cert, mine.key), ca), partner_address
    )
    assert answered.startswith(b"SIP/2.0 200"), answered


async def test_a_partner_leg_asking_for_a_place_beyond_the_queue_joins_at_its_end(
    verbund: lab.Verbund, start_service, start_desks
) -> None:
    """Asterisk bounds X-Verbund-Queue-Position by the real queue itself (app_queue join_queue)."""
    jena = await start_service("jena")
    await start_desks("jena", ["jena-d1"])
    site, mine = verbund.site("jena"), verbund.certificates["gera"]
    source = (verbund.site("gera").values.intersite_address, 0)
    with jena.hub.subscribe() as seen:
        talking = asyncio.create_task(place_call(verbund, "jena", "+4936411130001", talk_ms=6000))
        await next_event(seen, events.DispatcherAnswered, lambda e: e.dispatcher == "jena-d1")
        waiting_call = asyncio.create_task(place_call(verbund, "jena", "+4936411130002", talk_ms=500))
        await next_event(seen, events.CallerJoinedQueue, lambda e: e.caller_number == "+4936411130002")
        context = tls_client((mine.cert, mine.key), mine.ca)
        address, port = site.values.intersite_address, site.values.intersite_port
        with (
            socket.create_connection((address, port), timeout=5, source_address=source) as plain,
            context.wrap_socket(plain) as tls,
        ):
            leg = handover(site, tls.getsockname(), "TLS", "gera-1.1", position=999)
            tls.sendall(leg.invite())
            joined = await next_event(
                seen, events.CallerJoinedQueue, lambda e: e.channel.startswith(dialplan.INTERSITE_CHANNEL_PREFIX)
            )
            tls.sendall(leg.cancel())
    assert joined.position == 2  # behind the one caller waiting, not at 999 and not ahead
    assert await talking == 0
    assert await waiting_call == 0
