"""The service's container image in the lab: docker/Dockerfile built and run with podman.

No image registry is reachable from the lab's machines, so the image is built FROM a base made
offline: a minimal Debian 12 (bookworm) with python3 and its venv module, debootstrapped from the
mirror the Asterisk root filesystem comes from and imported into podman's storage. The base is
made once (about a minute) under a tag that names its recipe and reused while that tag exists
(`podman image exists`); a new recipe gets a new tag. The service's dependencies come as wheels
from this machine's pip (its cache and indexes), so the build needs no network either.

podman runs with runc and lab/containers.conf (CONTAINERS_CONF): see that file for why.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lab.rootfs import remove_tree

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
CONTAINERS_CONF = Path(__file__).with_name("containers.conf")
# Bump BASE_RECIPE when the package set changes: a new tag, built once.
BASE_PACKAGES = ("python3", "python3-venv")
BASE_RECIPE = "v1"
BASE_IMAGE = f"localhost/verbund112-base:bookworm-{BASE_RECIPE}"
# Wheels the image needs beyond what this machine's Python resolves: setuptools builds the service, and
# Debian 12's Python is 3.11.2, for which redis wants async-timeout (python_full_version < "3.11.3")
BUILD_EXTRAS = ("setuptools>=68", "async-timeout>=4.0.3")
# what the Dockerfile's build stage installs from, with no index
OFFLINE_PIP = "--no-index --find-links /wheels"


class ImageError(RuntimeError):
    pass


def podman(*args: str | Path, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
    command = ["podman", "--runtime", "runc", *map(str, args)]
    env = {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    if check and result.returncode != 0:
        raise ImageError(f"{' '.join(command[:5])} ...: exit {result.returncode}\n{result.stdout}{result.stderr}")
    return result


def ensure_base_image() -> float:
    """Make the offline Debian 12 base unless podman has it; returns the seconds spent (0.0: cached)."""
    if podman("image", "exists", BASE_IMAGE, check=False).returncode == 0:
        return 0.0
    if shutil.which("debootstrap") is None:
        raise ImageError("debootstrap is not installed (scripts/bootstrap installs it)")
    started = time.monotonic()
    log.info("making the image base %s with debootstrap (about a minute, once)", BASE_IMAGE)
    with tempfile.TemporaryDirectory(prefix="verbund112-base-") as work:
        root = Path(work) / "root"
        try:
            made = subprocess.run(
                ["debootstrap", "--variant=minbase", "--include=" + ",".join(BASE_PACKAGES), "bookworm", str(root)],
                capture_output=True, text=True, timeout=600, check=False,
            )  # fmt: skip
            if made.returncode != 0:
                raise ImageError(f"debootstrap bookworm failed (exit {made.returncode}): {made.stdout[-2000:]}")
            for cache in ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man"):
                remove_tree(root / cache)
            env = {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}
            # the with block closes tar's pipe (an open one fails the tests with a ResourceWarning)
            packing = ["tar", "--numeric-owner", "-C", str(root), "-c", "."]
            with subprocess.Popen(packing, stdout=subprocess.PIPE) as tar:
                imported = subprocess.run(["podman", "import", "-", BASE_IMAGE], stdin=tar.stdout, capture_output=True,
                                          text=True, timeout=300, env=env, check=False)  # fmt: skip
                tar.wait(timeout=60)
            if imported.returncode != 0 or tar.returncode != 0:
                raise ImageError(f"podman import failed: {imported.stderr}")
        finally:
            remove_tree(root)
    return time.monotonic() - started


def offline_context(files: list[str], folder: Path) -> Path:
    """A build context: the given checkout files, and in docker/wheels/ the wheels of the service's
    dependencies and of setuptools (which builds it), made by this machine's pip."""
    for name in files:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, folder / name)
    wheels = folder / "docker/wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    made = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check", "-w", str(wheels), str(folder),
         *BUILD_EXTRAS],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    if made.returncode != 0:
        raise ImageError(f"pip wheel failed: {made.stderr[-3000:]}")
    for own in wheels.glob("verbund112-*.whl"):  # the image builds the service from the sources itself
        own.unlink()
    shutil.rmtree(folder / "build", ignore_errors=True)
    return folder


def build(context: Path, tag: str) -> None:
    """docker/Dockerfile FROM the offline base, its dependencies from the context's wheels; the
    image the tag named before is removed (its build stage stays as the cache of the next build)."""
    before = podman("image", "inspect", "--format", "{{.Id}}", tag, check=False).stdout.strip()
    podman("build", "--format", "docker", "--network", "host", "--build-arg", f"BASE={BASE_IMAGE}",
           "--build-arg", f"PIP_OPTIONS={OFFLINE_PIP}", "-f", context / "docker/Dockerfile", "-t", tag, context,
           timeout=600)  # fmt: skip
    if before and podman("image", "inspect", "--format", "{{.Id}}", tag).stdout.strip() != before:
        podman("rmi", before, check=False)  # still used by a container: it stays
