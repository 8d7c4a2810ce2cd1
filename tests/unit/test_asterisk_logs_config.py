"""Asterisk's own logs: what the rendered configuration lets into them, and how long they are kept.

The lab test tests/integration/test_asterisk_logs.py reads the logs after real calls; these
check the rendered files themselves, and run logrotate (a real one) over the shipped rotation.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from verbund112 import asterisk_config

# dialplan values that are personal data: the caller number, the PIDF-LO, the cell, the UUI
PERSONAL = re.compile(r"\$\{(V112_CALLER|CALLERID\(|CONNECTEDLINE\(|V112_GEO_|GEOLOC_PROFILE|V112_PANI|V112_UUI)")
LOG_APPS = re.compile(r"\b(Verbose|NoOp|Log)\(")


def rendered(site_name: str = "jena", **overrides: object) -> dict[str, str]:
    site = asterisk_config.load_site(site_name, **overrides)
    return asterisk_config.render(site, asterisk_config.SiteSecrets.generate(site))


@pytest.mark.parametrize("site_name", ["jena", "gera"])
def test_no_log_file_takes_verbose_3_where_dialplan_arguments_are_logged(site_name: str) -> None:
    logger = rendered(site_name)["logger.conf"]
    channels = dict(re.findall(r"^(\S+)\s*=>\s*(.+)$", logger, re.M))
    assert set(channels) == {"messages.log", "security.log"}  # no console, no full log
    for levels in channels.values():
        verbose = re.search(r"verbose(?:\((\d+)\))?", levels)
        assert verbose is None or (verbose.group(1) is not None and int(verbose.group(1)) <= 2), levels
    assert channels["security.log"].strip() == "security"
    assert re.search(r"^rotatestrategy = none$", logger, re.M)  # logrotate owns rotation and retention
    assert re.search(r"^queue_log = yes$", logger, re.M)


def test_no_dialplan_log_line_prints_a_number_a_position_or_a_cell() -> None:
    dialplan = rendered()["extensions.conf"]
    leaking = [line for line in dialplan.splitlines() if LOG_APPS.search(line) and PERSONAL.search(line)]
    assert leaking == []


def test_the_security_log_module_is_loaded() -> None:
    assert re.search(r"^load => res_security_log\.so$", rendered()["modules.conf"], re.M)


def _write_logs(directory: Path, day: int) -> None:
    for name in ("messages.log", "security.log", "queue_log"):
        with (directory / name).open("a") as log:
            log.write(f"day {day}\n")


def test_logrotate_keeps_the_current_file_and_retention_minus_one_old_ones(tmp_path: Path) -> None:
    logs, etc = tmp_path / "log", tmp_path / "etc"
    logs.mkdir()
    paths = asterisk_config.AsteriskPaths(log=str(logs), etc=str(etc))
    files = rendered(log_retention_days=3, paths=paths)
    asterisk_config.write(files, etc)
    config = etc / "verbund112-logrotate.conf"
    for day in range(6):  # six days of calls, a rotation after each (forced: -f)
        _write_logs(logs, day)
        result = subprocess.run(
            ["logrotate", "--force", "--state", str(tmp_path / "state"), str(config)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
    _write_logs(logs, 6)
    kept = sorted(path.name for path in logs.iterdir())
    for name in ("messages.log", "security.log", "queue_log"):
        # today's file and two old ones (3 days); older ones are deleted
        assert [k for k in kept if k.startswith(name)] == [name, f"{name}.1", f"{name}.2.gz"], kept
    assert (logs / "queue_log.1").read_text() == "day 5\n"
