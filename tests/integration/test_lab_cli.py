"""`verbund112 lab up / status / call / down`, as a newcomer or an admin uses them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lab import lab
from lab.processes import tcp_accepts

pytestmark = pytest.mark.lab


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "verbund112", *args], capture_output=True, text=True, env=env, timeout=240, check=False
    )


def test_lab_up_call_and_down_leave_nothing_behind() -> None:
    instance = f"clitest-{os.getpid()}"
    env = {**os.environ, "VERBUND112_LAB_INSTANCE": instance}
    state_file = lab.lab_dir() / f"{instance}.json"
    up = cli("lab", "up", "--desks", "1", env=env)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert str(state_file) in up.stdout
        state = json.loads(state_file.read_text())
        assert oct(state_file.stat().st_mode & 0o777) == "0o600"  # it holds API tokens
        assert set(state["sites"]) == {"jena", "gera"}

        status = cli("lab", "status", env=env)
        assert status.returncode == 0
        assert "all processes running" in status.stdout

        call = cli("lab", "call", "--site", "gera", "--number", "0365123456", "--talk", "0.5", env=env)
        assert call.returncode == 0, call.stdout + call.stderr
        assert "answered at gera by dispatcher gera-d1" in call.stdout
    finally:
        down = cli("lab", "down", env=env)
    assert down.returncode == 0, down.stdout + down.stderr
    assert not state_file.exists()
    for process in state["processes"]:
        assert not Path(f"/proc/{process['pid']}").exists() or not lab._is_ours(process["pid"], process["marker"])
    for site in state["sites"].values():
        for port in (site["ami_port"], site["fastagi_port"], int(site["web_url"].rsplit(":", 1)[1])):
            assert not tcp_accepts(port)
    assert not (lab.lab_dir() / "rootfs/srv/verbund112" / instance).exists()
    assert cli("lab", "status", env=env).returncode == 1
