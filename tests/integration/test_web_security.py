"""The HTTP edge through the real lab: who sees caller numbers, how screens sign in, and the listener's limits."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time

import aiohttp
import pytest

from lab import lab
from telephony import dialplan
from tests.integration.test_screen_pops import TIMEOUT, connect_screen, next_message, socket_url
from tests.support.agi_client import exchange, request_text
from verbund112.service import Service
from verbund112.store.records import AbandonedCall

pytestmark = pytest.mark.lab

CLOSED_BY_POLICY = 1008


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def counted(service: Service, metric: str, **labels: str) -> float:
    return service.registry.get_sample_value(f"{metric}_total", labels) or 0.0


async def abandoned_call(service: Service, number: str) -> AbandonedCall:
    entry = AbandonedCall(call_id=f"jena-roles.{time.time_ns()}", caller=number, site="jena", at=time.time(),
                          waited_s=12.0)  # fmt: skip
    assert await service.store.add_abandoned_once(entry) == "added"
    return entry


async def test_the_read_role_gets_no_caller_numbers_and_cannot_mark_calls_called_back(
    verbund: lab.Verbund, start_service
) -> None:
    jena = await start_service("jena")
    entry = await abandoned_call(jena, "+4915112340771")
    base = f"http://127.0.0.1:{verbund.ports['jena'].web}"
    try:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as client:
            for method, path in [("GET", "/api/v1/abandoned"),
                                 ("POST", f"/api/v1/abandoned/{entry.call_id}/callback-done")]:  # fmt: skip
                async with client.request(method, base + path, headers=bearer(verbund.read_token)) as response:
                    assert response.status == 403, path
                    assert entry.caller not in await response.text()
            for path in ("/api/v1/status", "/api/v1/supervisor", "/metrics", "/api/v1/rules/audit"):
                async with client.get(base + path, headers=bearer(verbund.read_token)) as response:
                    assert response.status == 200, path
                    assert entry.caller not in await response.text(), path
        assert entry.call_id in [call.call_id for call in await jena.store.abandoned_calls()]  # still to call back
    finally:
        await jena.store.callback_done(entry.call_id)


async def test_a_supervisor_reads_the_callback_list_with_numbers_and_marks_a_call_called_back(
    verbund: lab.Verbund, start_service
) -> None:
    supervisor = secrets.token_urlsafe(24)
    tokens = {**verbund.service_settings("jena")["web"]["tokens"],
              supervisor: {"role": "supervisor", "name": "schichtleitung"}}  # fmt: skip
    jena = await start_service("jena", web={"tokens": tokens})
    entry = await abandoned_call(jena, "+4915112340772")
    base = f"http://127.0.0.1:{verbund.ports['jena'].web}"
    try:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as client:
            async with client.get(f"{base}/api/v1/abandoned", headers=bearer(supervisor)) as response:
                assert response.status == 200
                listed = {call["call_id"]: call["caller"] for call in (await response.json())["calls"]}
            assert listed[entry.call_id] == entry.caller
            async with client.get(f"{base}/api/v1/supervisor", headers=bearer(supervisor)) as response:
                assert response.status == 200
            async with client.get(f"{base}/dispatch/jena-d1?token={supervisor}") as response:
                assert response.status == 403  # a supervisor is no dispatcher seat
            done_url = f"{base}/api/v1/abandoned/{entry.call_id}/callback-done"
            async with client.post(done_url, headers=bearer(supervisor)) as response:
                assert response.status == 200
                assert (await response.json())["by"] == "schichtleitung"
        assert entry.call_id not in [call.call_id for call in await jena.store.abandoned_calls()]
    finally:
        await jena.store.callback_done(entry.call_id)


async def closed_with(socket: aiohttp.ClientWebSocketResponse) -> tuple[int, str]:
    """The close code and reason the server sends; fails if it sends anything else first."""
    message = await socket.receive(timeout=10)
    assert message.type == aiohttp.WSMsgType.CLOSE, message
    return message.data, message.extra


async def test_a_screen_signs_in_with_its_first_message_never_with_a_token_in_its_url(
    verbund: lab.Verbund, start_service
) -> None:
    jena = await start_service("jena")  # a screen has web.screen_auth_timeout_s (5 s) to sign in
    url = socket_url(verbund, "jena", "jena-d1")
    async with aiohttp.ClientSession(timeout=TIMEOUT) as client:
        async with client.ws_connect(f"{url}?token={verbund.desk_tokens['jena-d1']}") as socket:
            assert await closed_with(socket) == (CLOSED_BY_POLICY, "Anmeldung fehlt oder ungültig")
        async with client.ws_connect(url) as socket:
            await socket.send_json({"type": "auth", "token": verbund.desk_tokens["jena-d2"]})
            assert await closed_with(socket) == (CLOSED_BY_POLICY, "Token gehört nicht zu diesem Platz")
        async with client.ws_connect(url) as socket:
            await socket.send_json({"type": "auth", "token": "wrong"})
            assert await closed_with(socket) == (CLOSED_BY_POLICY, "Anmeldung fehlt oder ungültig")
        async with client.ws_connect(url) as socket:
            await socket.send_json({"type": "auth", "token": verbund.desk_tokens["jena-d1"]})
            assert (await next_message(socket, "hello"))["dispatcher"] == "jena-d1"
            await socket.send_json({"type": "state"})
            assert (await next_message(socket, "state"))["card"] is None
    refused = {reason: counted(jena, "verbund112_screens_refused", reason=reason)
               for reason in ("no-auth", "not-theirs", "bad-token")}  # fmt: skip
    assert refused == {"no-auth": 1, "not-theirs": 1, "bad-token": 1}


async def slowloris(port: int, stop: asyncio.Event, opened: list[int]) -> None:
    """Open a connection and send a request head one byte at a time; when it is closed, do it again."""
    head = b"GET /api/v1/status HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 4000
    while not stop.is_set():
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            opened.append(1)
            try:
                for byte in head:
                    if stop.is_set() or writer.is_closing():
                        break
                    writer.write(bytes([byte]))
                    await writer.drain()
                    await asyncio.sleep(0.05)
            finally:
                writer.close()
        await asyncio.sleep(0.05)


async def test_slowloris_and_a_websocket_flood_cannot_starve_routing(verbund: lab.Verbund, start_service) -> None:
    jena = await start_service("jena", web={"max_connections": 30, "request_head_timeout_s": 1.0,
                                            "max_screens_per_dispatcher": 2, "screen_auth_timeout_s": 1.0})  # fmt: skip
    port = verbund.ports["jena"].web
    stop = asyncio.Event()
    opened: list[int] = []
    answered: list[str | None] = []

    def limits_acted() -> bool:
        closed = [counted(jena, "verbund112_web_connections_closed", limit=limit)
                  for limit in ("max-connections", "request-head-timeout")]  # fmt: skip
        return all(closed) and counted(jena, "verbund112_screens_refused", reason="no-auth") == 5

    asterisk_knows = {dialplan.FASTAGI_SECRET: verbund.site("jena").secrets.fastagi_secret}
    async with aiohttp.ClientSession(timeout=TIMEOUT) as client:
        # a dispatcher's token opens screen after screen, and sockets that never sign in pile up beside them
        screens = [await connect_screen(client, verbund, "jena", "jena-d1") for _ in range(6)]
        silent = [await client.ws_connect(socket_url(verbund, "jena", "jena-d2")) for _ in range(5)]
        attackers = [asyncio.create_task(slowloris(port, stop, opened)) for _ in range(60)]
        try:
            # meanwhile Asterisk's routing questions are answered by the service, until the limits have acted
            async with asyncio.timeout(60):
                while not limits_acted() or len(answered) < 20:
                    answer = await exchange(
                        jena.fastagi.port, asterisk_knows, request_text(uniqueid=f"jena-limits.{len(answered)}")
                    )
                    answered.append(answer.get("V112_ROUTE"))
        finally:
            stop.set()
            await asyncio.gather(*attackers)
            for socket in [*screens, *silent]:
                await socket.close()
    assert limits_acted()  # refused over the cap, cut off mid-head, unsigned screens closed: counted
    assert set(answered) == {"local"}
    assert jena.fastagi.stats.fallbacks == 0  # every answer was the service's own decision, in time
    assert len(opened) > 60  # the attackers were cut off and came back
    assert counted(jena, "verbund112_screens_refused", reason="too-many") == 4
    status_url = f"http://127.0.0.1:{port}/api/v1/status"
    async with (  # and the web keeps serving
        aiohttp.ClientSession(timeout=TIMEOUT) as client,
        client.get(status_url, headers=bearer(verbund.read_token)) as response,
    ):
        assert response.status == 200
