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


def forged_invite(site: lab.AsteriskSite, source: tuple[str, int], call_id: str) -> bytes:
    """An INVITE as the partner's handover would look, claiming a real call and place 1."""
    target = f"{lab.LOOPBACK}:{site.values.sip_port}"
    sdp = (
        "v=0\r\no=- 1 1 IN IP4 {0}\r\ns=-\r\nc=IN IP4 {0}\r\nt=0 0\r\n"
        "m=audio 40000 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n"
    ).format(source[0])
    headers = [
        f"INVITE sip:{site.values.partner_exten}@{target} SIP/2.0",
        f"Via: SIP/2.0/UDP {source[0]}:{source[1]};branch=z9hG4bK{uuid.uuid4().hex}",
        "Max-Forwards: 70",
        f"From: <sip:+4936419999999@{source[0]}>;tag={uuid.uuid4().hex[:8]}",
        f"To: <sip:{site.values.partner_exten}@{target}>",
        f"Call-ID: {uuid.uuid4().hex}@{source[0]}",
        "CSeq: 1 INVITE",
        f"Contact: <sip:ghost@{source[0]}:{source[1]};transport=tls>",
        f"X-Verbund-Call-Id: {call_id}",
        f"X-Verbund-Site: {site.values.partner}",
        "X-Verbund-Queue-Position: 1",
        "Content-Type: application/sdp",
        f"Content-Length: {len(sdp)}",
    ]
    return ("\r\n".join(headers) + "\r\n\r\n" + sdp).encode()


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
        send_spoofed_udp(source, (lab.LOOPBACK, site.values.sip_port), forged_invite(site, source, waiting.call_id))

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
