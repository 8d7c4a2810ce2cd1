"""A stand-in for the central AML server, for the pull tests.

HTTPS on loopback that requires a client certificate signed by its client CA
and HTTP basic auth, like the real one. The CA, the server's and the clients'
certificates are made at run time (cryptography) into a temporary directory:
no key is ever committed. The test decides each answer through ``answer``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

USERNAME = "zls-jena"
PASSWORD = "pull-secret-for-tests"
NO_DATA = [{"status": "no aml data"}]


@dataclass(frozen=True)
class Pki:
    ca: Path  # signs the server's certificate (the client's ca_file)
    server_cert: Path
    server_key: Path
    client_ca: Path  # the server accepts client certificates signed by this
    client_cert: Path
    client_key: Path
    stranger_cert: Path  # a client certificate from a CA the server does not know
    stranger_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _issue(
    subject: str,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    server: bool = False,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    issuer_name, issuer_key = issuer if issuer is not None else (_name(subject), key)
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )  # fmt: skip
        builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    else:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
        )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256()), key


def _write(directory: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> tuple[Path, Path]:
    cert_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def make_pki(directory: Path) -> Pki:
    ca_cert, ca_key = _issue("test AML server CA", None, ca=True)
    client_ca_cert, client_ca_key = _issue("test Leitstellen CA", None, ca=True)
    stranger_ca_cert, stranger_ca_key = _issue("somebody else's CA", None, ca=True)
    server = _issue("localhost", (ca_cert.subject, ca_key), server=True)
    client = _issue("ZLS Jena (test)", (client_ca_cert.subject, client_ca_key))
    stranger = _issue("not a Leitstelle", (stranger_ca_cert.subject, stranger_ca_key))
    ca_path, _ = _write(directory, "ca", ca_cert, ca_key)
    client_ca_path, _ = _write(directory, "client-ca", client_ca_cert, client_ca_key)
    server_cert, server_key = _write(directory, "server", *server)
    client_cert, client_key = _write(directory, "client", *client)
    stranger_cert, stranger_key = _write(directory, "stranger", *stranger)
    return Pki(ca_path, server_cert, server_key, client_ca_path, client_cert, client_key, stranger_cert, stranger_key)


@dataclass
class AmlServer:
    """What the stand-in saw; ``answer(number)`` returns JSON data, a web.StreamResponse or a coroutine."""

    url: str
    answer: Callable[[str], object]
    requests: list[str] = field(default_factory=list)  # the numbers asked for, authorised requests only
    refused: int = 0
    seen: asyncio.Event = field(default_factory=asyncio.Event)  # set at every authorised request

    async def asked(self, number: str, times: int = 1) -> None:
        """Wait until the server was asked for a number this often."""
        while self.requests.count(number) < times:
            self.seen.clear()
            await self.seen.wait()


def fix(lat: float, lon: float, accuracy: float = 12.0, time_ms: int | None = None, **extra: object) -> dict[str, Any]:
    """One entry of the server's answer, in the shape a Leitstelle's client shows."""
    entry: dict[str, Any] = {"location_latitude": lat, "location_longitude": lon, "location_accuracy": str(accuracy),
                             "location_source": "gps", "status": "ok"}  # fmt: skip
    if time_ms is not None:
        entry["location_time"] = time_ms
    return entry | extra


def server_ssl(pki: Pki) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    context.load_verify_locations(pki.client_ca)
    context.verify_mode = ssl.CERT_REQUIRED  # no client certificate, no connection
    return context


@contextlib.asynccontextmanager
async def serve(pki: Pki, answer: Callable[[str], object] = lambda _: NO_DATA) -> AsyncIterator[AmlServer]:
    """Run the stand-in on a free loopback port until the generator is closed."""
    state = AmlServer("", answer)
    expected = "Basic " + base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode()

    async def get_data(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != expected:
            state.refused += 1
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="aml"'})
        number = request.query.get("number", "")
        state.requests.append(number)
        state.seen.set()
        result = state.answer(number)
        if asyncio.iscoroutine(result):  # e.g. an answer that never comes
            result = await result
        if isinstance(result, web.StreamResponse):
            return result
        return web.json_response(result)

    app = web.Application()
    app.router.add_get("/get-data", get_data)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ssl(pki))
    await site.start()
    state.url = f"https://127.0.0.1:{runner.addresses[0][1]}/get-data"
    try:
        yield state
    finally:
        await runner.cleanup()
