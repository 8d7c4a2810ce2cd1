"""A stand-in for the central AML server, for the pull tests.

HTTPS on loopback that requires a client certificate signed by its client CA
and HTTP basic auth, like the real one. The CA, the server's and the clients'
certificates are made at run time (lab.pki) into a temporary directory:
no key is ever committed. The test decides each answer through ``answer``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from lab.pki import issue, write

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


def make_pki(directory: Path) -> Pki:
    ca_cert, ca_key = issue("test AML server CA", None, ca=True)
    client_ca_cert, client_ca_key = issue("test Leitstellen CA", None, ca=True)
    stranger_ca_cert, stranger_ca_key = issue("somebody else's CA", None, ca=True)
    server = issue(
        "localhost", (ca_cert.subject, ca_key), server=True, client=False, alt_names=["localhost", "127.0.0.1"]
    )
    client = issue("ZLS Jena (test)", (client_ca_cert.subject, client_ca_key))
    stranger = issue("not a Leitstelle", (stranger_ca_cert.subject, stranger_ca_key))
    ca_path, _ = write(directory, "ca", ca_cert, ca_key)
    client_ca_path, _ = write(directory, "client-ca", client_ca_cert, client_ca_key)
    server_cert, server_key = write(directory, "server", *server)
    client_cert, client_key = write(directory, "client", *client)
    stranger_cert, stranger_key = write(directory, "stranger", *stranger)
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
