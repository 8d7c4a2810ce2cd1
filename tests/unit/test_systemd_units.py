"""The shipped systemd unit: valid for systemd (systemd-analyze), supervised, hardened, not bound to Redis."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "deploy" / "systemd" / "verbund112@.service"
EXEC = "/opt/verbund112/bin/verbund112"


def entries() -> list[tuple[str, str, str]]:
    """(section, key, value) in file order; systemd allows a key more than once."""
    found, section = [], ""
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        found.append((section, key.strip(), value.strip()))
    return found


def values(section: str, key: str) -> list[str]:
    return [value for s, k, value in entries() if (s, k) == (section, key)]


def one(section: str, key: str) -> str:
    (value,) = values(section, key)
    return value


@pytest.fixture
def checkable(tmp_path: Path) -> Path:
    """The unit as installed on a test machine: its ExecStart binary is a stand-in that exists."""
    stand_in = tmp_path / "verbund112"
    stand_in.write_text("#!/bin/sh\n")
    stand_in.chmod(0o755)
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace(EXEC, str(stand_in)))
    return unit


def test_systemd_accepts_the_unit_without_a_warning(checkable: Path) -> None:
    result = subprocess.run(
        ["systemd-analyze", "verify", str(checkable.with_name("verbund112@jena.service"))],
        capture_output=True, text=True, timeout=60, check=False, cwd=checkable.parent,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr  # an unknown or misspelt key is only a warning


def test_the_unit_is_hardened_to_systemds_ok_level(checkable: Path) -> None:
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--threshold=20", str(checkable)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:]  # exposure at most 2.0 of 10


def test_notify_watchdog_and_restart_for_ever() -> None:
    assert one("Service", "Type") == "notify"
    assert one("Service", "NotifyAccess") == "main"
    assert one("Service", "WatchdogSec").rstrip("s").isdigit()
    assert one("Service", "Restart") == "always"
    assert one("Service", "RestartSec")
    assert one("Unit", "StartLimitIntervalSec") == "0"  # never gives up for good
    assert one("Service", "ExecStart").startswith(f"{EXEC} serve --config /etc/verbund112/%i.yaml")
    assert one("Service", "LimitCORE") == "0"  # a core dump would hold caller data


def test_it_starts_after_the_network_and_runs_without_redis_or_asterisk() -> None:
    assert "network-online.target" in one("Unit", "After")
    assert "network-online.target" in one("Unit", "Wants")
    for binding in ("Requires", "BindsTo", "Requisite", "PartOf"):
        assert not values("Unit", binding), f"{binding}: the service must run without Redis and Asterisk"


def test_own_user_secrets_from_a_root_only_file_and_the_journal() -> None:
    assert one("Service", "User") == "verbund112"
    assert one("Service", "EnvironmentFile") == "/etc/verbund112/%i.env"
    assert one("Service", "StandardOutput") == one("Service", "StandardError") == "journal"
    hardening = {
        "NoNewPrivileges": "yes", "ProtectSystem": "strict", "PrivateTmp": "yes", "ProtectHome": "yes",
        "PrivateDevices": "yes", "CapabilityBoundingSet": "", "StateDirectory": "verbund112/%i",
    }  # fmt: skip
    for key, expected in hardening.items():
        assert one("Service", key) == expected, key
    assert not values("Service", "ReadWritePaths")  # the state directory is the one writable place
