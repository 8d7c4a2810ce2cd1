"""The image is the product too: docker/Dockerfile built with podman, Jena's service run from it.

The image is built FROM the offline Debian 12 base (lab/image.py: made once, then cached in
podman's storage) from a copy of the checkout, its dependencies from this machine's wheels. The
container runs on the host network against the lab's Asterisk and Redis (through the sentinels),
with its settings file mounted and its secrets as files in a mounted folder (none in its
environment). A 112 call is routed by it (its FastAGI answers, Asterisk logs the route) and the
answering dispatcher's screen gets the card from it; it runs as its own user, not root, and its
HEALTHCHECK passes. First run about 2 minutes (base and build), later runs about 30 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import yaml

from lab import image, lab
from lab.processes import wait_until
from tests.conftest import place_call
from tests.integration.test_screen_pops import TIMEOUT, connect_screen, next_message
from tests.integration.test_supervised_service import MessagesLog, fastagi_stats, readyz
from tests.support.checkout import checkout_files

pytestmark = [pytest.mark.lab, pytest.mark.timeout(600)]  # the first run makes the base and builds

TAG = "localhost/verbund112:lab-test"
IMAGE_UID = 10112  # docker/Dockerfile's user
CALLER = "+4915112349101"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> str:
    started = time.monotonic()
    base_s = image.ensure_base_image()
    context = image.offline_context(checkout_files(), tmp_path_factory.mktemp("context"))
    image.build(context, TAG)
    print(f"image: base {base_s:.0f} s (0: cached), base and build {time.monotonic() - started:.0f} s")
    return TAG


def secrets_folder(secrets: dict[str, str], folder: Path) -> Path:
    """One file per secret, named like its variable, readable by the image's user only."""
    folder.mkdir(mode=0o700)
    os.chown(folder, IMAGE_UID, IMAGE_UID)
    for variable, value in secrets.items():
        path = folder / variable.lower()
        path.write_text(value + "\n")
        path.chmod(0o400)
        os.chown(path, IMAGE_UID, IMAGE_UID)
    return folder


@pytest.fixture
def jena_container(built: str, verbund: lab.Verbund, tmp_path: Path) -> Iterator[str]:
    """Jena's service from the image; its log is printed when the test fails."""
    settings, secrets = lab.split_secrets(verbund.service_settings("jena"))
    del settings["rules_file"]  # the rules the image carries (the lab's are a copy of them)
    config = tmp_path / "jena.yaml"
    config.write_text(yaml.safe_dump(settings, sort_keys=False))
    config.chmod(0o644)
    name = f"verbund112-jena-{os.getpid()}"
    image.podman("rm", "--force", "--ignore", name)
    image.podman(
        "run", "--detach", "--name", name, "--network", "host",
        "--volume", f"{config}:/etc/verbund112/verbund112.yaml:ro",
        "--volume", f"{secrets_folder(secrets, tmp_path / 'secrets')}:/run/secrets:ro",
        "--env", "VERBUND112_LOG__FORMAT=console",
        built,
    )  # fmt: skip
    try:
        wait_until(lambda: _running(name) and _ready(verbund), 60, "the container's service ready")
        yield name
    finally:
        logs = image.podman("logs", name, check=False)
        print((logs.stdout + logs.stderr)[-5000:])
        image.podman("rm", "--force", "--time", "20", name, timeout=60, check=False)


def _ready(verbund: lab.Verbund) -> bool:
    with contextlib.suppress(OSError):  # not listening yet
        return readyz(verbund, "jena")[0] == 200
    return False


def _running(name: str) -> bool:
    state = image.podman("inspect", "--format", "{{.State.Status}}", name).stdout.strip()
    if state != "running":
        raise AssertionError(f"container {name} is {state}")
    return True


async def test_jenas_service_from_the_image_routes_a_call_and_pops_the_card(
    verbund: lab.Verbund, jena_container: str, start_desks
) -> None:
    await start_desks("jena", ["jena-d1"])
    log = MessagesLog(verbund.site("jena"))
    async with aiohttp.ClientSession(timeout=TIMEOUT) as client:
        screen = await connect_screen(client, verbund, "jena", "jena-d1")
        await next_message(screen, "hello")
        call = asyncio.create_task(place_call(verbund, "jena", CALLER, talk_ms=3000, position=(50.9279, 11.5891, 25)))
        card = await next_message(screen, "card")
        assert (card["caller"], card["dispatcher"], card["answered_site"]) == (CALLER, "jena-d1", "jena")
        assert card["routing"]["centre"] == "jena"  # the record the container's FastAGI handler wrote
        assert card["locations"][0]["district"] == "Jena"
        assert await call == 0
    assert fastagi_stats(verbund, "jena")["answered"] == 1
    assert fastagi_stats(verbund, "jena")["fallbacks"] == 0
    assert "AGISTATUS=SUCCESS route=local" in log.since()


def test_the_container_runs_as_its_own_user_and_its_healthcheck_passes(jena_container: str) -> None:
    users = image.podman("top", jena_container, "user", "huser").stdout.split()
    assert users[2:] == ["verbund112", str(IMAGE_UID)]  # the header, then the service's one process
    configured = json.loads(image.podman("inspect", "--format", "{{json .Config.Healthcheck}}", jena_container).stdout)
    assert configured["Test"] == ["CMD", "verbund112", "healthcheck"]
    checked = image.podman("healthcheck", "run", jena_container, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    status = image.podman("inspect", "--format", "{{.State.Health.Status}}", jena_container).stdout.strip()
    assert status == "healthy"
