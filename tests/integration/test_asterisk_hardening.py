"""What the service's own Asterisk lets it do, tried against the real lab.

The AMI user may read queues and channel variables and take a waiting caller
out of the queue: with its secret nobody can redirect, hang up, originate,
pause a desk, run CLI commands or change Asterisk's database.
"""

from __future__ import annotations

import asyncio

import pytest

from lab import lab
from telephony.ami import AmiError, AmiSettings
from verbund112.service import Service

pytestmark = pytest.mark.lab

# Each would be harmless even if Asterisk ran it: the channels, members and keys do not exist.
FORBIDDEN_ACTIONS = {
    "Redirect": {"Channel": "PJSIP/v112-nobody-00000000", "Context": "v112-local", "Exten": "s", "Priority": "1"},
    "Hangup": {"Channel": "PJSIP/v112-nobody-00000000"},
    "Originate": {"Channel": "Local/s@v112-nowhere", "Application": "NoOp", "Async": "true"},
    "QueuePause": {"Queue": "112-jena", "Interface": "PJSIP/v112-nobody", "Paused": "true"},
    "Setvar": {"Channel": "PJSIP/v112-nobody-00000000", "Variable": "V112_MOVED", "Value": "1"},
    "Command": {"Command": "core show version"},
    "DBDel": {"Family": "v112-nothing", "Key": "nothing"},
    "ModuleLoad": {"Module": "v112_no_such_module.so", "LoadType": "load"},
}


async def answer_to(service: Service, action: str, fields: dict[str, str]) -> str:
    """'ok', or the error Asterisk answered with."""
    try:
        await service.ami.action({"Action": action, **fields})
    except AmiError as exc:
        return str(exc)
    return "ok"


async def test_the_service_user_is_refused_every_action_that_could_move_end_or_start_a_call(start_service) -> None:
    jena = await start_service("jena")
    answers = {action: await answer_to(jena, action, fields) for action, fields in FORBIDDEN_ACTIONS.items()}
    assert answers == {action: f"{action}: Permission denied" for action in FORBIDDEN_ACTIONS}
    assert jena.ami.connected.is_set()  # refused actions do not cost the connection


async def test_the_service_user_may_do_what_the_service_needs(start_service) -> None:
    jena = await start_service("jena")
    assert await answer_to(jena, "QueueStatus", {"Queue": "112-jena"}) == "ok"
    assert await jena.ami.channel_variable("", "V112_SITE") == "jena"  # Getvar (a global: no call needed)
    assert await answer_to(jena, "DBGetTree", {"Family": "v112-nothing"}) == "ok"
    # Allowed, and refused only because nobody waits: the overflow tests withdraw real callers.
    withdraw = {"Queue": "112-jena", "Caller": "PJSIP/v112-nobody-00000000", "WithdrawInfo": "001001"}
    assert await answer_to(jena, "QueueWithdrawCaller", withdraw) == (
        "QueueWithdrawCaller: Unable to request withdraw from queue: No such caller"
    )


async def login_from(address: str, settings: AmiSettings) -> str:
    """Log in with the service's credentials from another local address; Asterisk's answer message."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(settings.host, settings.port, local_addr=(address, 0)), 5
    )
    try:
        await asyncio.wait_for(reader.readline(), 5)  # the banner
        secret = settings.secret.get_secret_value()
        writer.write(f"Action: Login\r\nUsername: {settings.username}\r\nSecret: {secret}\r\n\r\n".encode())
        await writer.drain()
        answer = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).decode()
    finally:
        writer.close()
    return next(line.split(": ", 1)[1] for line in answer.splitlines() if line.startswith("Message: "))


async def test_the_service_user_may_log_in_only_from_the_services_address(verbund: lab.Verbund) -> None:
    settings = AmiSettings(**verbund.service_settings("jena")["ami"])
    assert await login_from("127.0.0.1", settings) == "Authentication accepted"
    assert await login_from("127.0.0.5", settings) == "Authentication failed"
