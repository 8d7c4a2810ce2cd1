"""Asterisk's side of a FastAGI exchange, for benchmarks and tests of the server alone.

It sends the agi_* request, answers GET VARIABLE and GET FULL VARIABLE from a
dict of channel variables (unset ones are empty / result=0), records SET
VARIABLE, and returns what was set. The real Asterisk is used wherever a call
is involved (tests/integration).
"""

from __future__ import annotations

import asyncio
import re

# ${NAME}, or a function such as ${AST_CONFIG(verbund112.conf,fastagi,secret)}: looked up as written
_EXPRESSION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*(?:\([^)]*\))?)\}")


def request_text(script: str = "route", uniqueid: str = "jena-1.1", caller: str = "+4936411234567") -> str:
    return (
        f"agi_network: yes\nagi_network_script: {script}\nagi_request: agi://127.0.0.1/{script}\n"
        f"agi_channel: PJSIP/carrier-00000001\nagi_uniqueid: {uniqueid}\nagi_callerid: {caller}\n"
        "agi_context: v112-emergency\nagi_extension: s\nagi_arg_1: jena\n\n"
    )


def _answer(line: str, variables: dict[str, str], set_variables: dict[str, str]) -> bytes:
    if line.startswith("GET FULL VARIABLE "):
        expression = line.removeprefix("GET FULL VARIABLE ")
        return f"200 result=1 ({_EXPRESSION.sub(lambda m: variables.get(m[1], ''), expression)})\n".encode()
    if line.startswith("GET VARIABLE "):
        value = variables.get(line.removeprefix("GET VARIABLE ").strip())
        return f"200 result=1 ({value})\n".encode() if value is not None else b"200 result=0\n"
    if line.startswith("SET VARIABLE "):
        name, _, value = line.removeprefix("SET VARIABLE ").partition(" ")
        set_variables[name] = value.strip('"')
        return b"200 result=1\n"
    return b"510 Invalid or unknown command\n"


async def exchange(
    port: int,
    variables: dict[str, str],
    request: str | None = None,
    host: str = "127.0.0.1",
    source: str | None = None,
    commands: list[str] | None = None,
) -> dict[str, str]:
    """One whole FastAGI exchange; returns the variables the server set.

    ``commands``: if given, every AGI command the server sent is appended to it.

    ``source``: the local address to connect from (e.g. 127.0.0.9, another loopback address than
    Asterisk's). The FastAGI secret is one of the ``variables`` (key: telephony.dialplan.FASTAGI_SECRET,
    the AST_CONFIG expression the server asks for) or missing.
    """
    reader, writer = await asyncio.open_connection(host, port, local_addr=(source, 0) if source else None)
    writer.write((request or request_text()).encode())
    set_variables: dict[str, str] = {}
    try:
        while line := (await reader.readline()).decode().strip():
            if commands is not None:
                commands.append(line)
            writer.write(_answer(line, variables, set_variables))
    except ConnectionResetError:
        pass  # refused: the server closed without a word
    finally:
        writer.close()
    return set_variables
