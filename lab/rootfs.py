"""The Asterisk root filesystem of the lab: Debian sid's Asterisk 22 in a chroot.

Debian 12 has no Asterisk package; sid has 22.x. The root filesystem is built
once with debootstrap (about 45 s, 500 MB) into a git-ignored folder and reused.
A build that was interrupted, or one made by an older recipe, is detected by its
marker file and rebuilt. Debootstrap uses its default mirror.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

log = logging.getLogger(__name__)

# Bump RECIPE when the package set changes: existing root filesystems are rebuilt.
PACKAGES = ("asterisk", "asterisk-modules", "asterisk-config")
RECIPE = "debootstrap minbase sid " + ",".join(PACKAGES) + " v1"
MARKER = ".verbund112-rootfs"
ASTERISK_BINARY = "usr/sbin/asterisk"


class RootfsError(RuntimeError):
    pass


def is_ready(root: Path) -> bool:
    marker = root / MARKER
    return marker.is_file() and marker.read_text().strip() == RECIPE and (root / ASTERISK_BINARY).is_file()


def mounts_under(path: Path) -> list[Path]:
    """Mount points at or below path, deepest first (the order to unmount them)."""
    prefix = str(path.resolve())
    found = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        mount_point = line.split()[1].replace("\\040", " ")
        if mount_point == prefix or mount_point.startswith(prefix + "/"):
            found.append(Path(mount_point))
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def unmount_all(path: Path) -> None:
    for mount_point in mounts_under(path):
        result = subprocess.run(["umount", str(mount_point)], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            # A process still holds it: detach now, the kernel frees it when they exit.
            subprocess.run(["umount", "-l", str(mount_point)], check=False)
    if mounts_under(path):
        raise RootfsError(f"could not unmount everything under {path}")


def remove_tree(path: Path) -> None:
    """Delete a root filesystem; never follows into a bind mount such as /dev."""
    if not path.exists():
        return
    unmount_all(path)
    subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=True)


def ensure(root: Path) -> float:
    """Build the root filesystem unless a complete one of this recipe is there.

    Returns the seconds spent building (0.0 when the cached one was used).
    """
    if is_ready(root):
        return 0.0
    if shutil.which("debootstrap") is None:
        raise RootfsError("debootstrap is not installed (scripts/bootstrap installs it)")
    if root.exists():
        log.warning("root filesystem %s is incomplete or stale: rebuilding", root)
        remove_tree(root)
    partial = root.with_name(root.name + ".partial")
    remove_tree(partial)
    partial.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    log.info("building the Asterisk root filesystem in %s (about a minute, once)", root)
    build_log = root.with_name(root.name + ".build.log")
    with build_log.open("w") as out:
        result = subprocess.run(
            ["debootstrap", "--variant=minbase", "--include=" + ",".join(PACKAGES), "sid", str(partial)],
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if result.returncode != 0 or not (partial / ASTERISK_BINARY).is_file():
        remove_tree(partial)
        raise RootfsError(f"debootstrap failed (exit {result.returncode}); see {build_log}")
    (partial / MARKER).write_text(RECIPE + "\n")
    os.rename(partial, root)
    return time.monotonic() - started


def mount(root: Path) -> None:
    """proc and /dev inside the root, as Asterisk needs them. Idempotent."""
    _hostname_resolves(root)
    mounted = set(mounts_under(root))
    proc, dev = (root / "proc").resolve(), (root / "dev").resolve()
    if proc not in mounted:
        subprocess.run(["mount", "-t", "proc", "proc", str(proc)], check=True)
    if dev not in mounted:
        subprocess.run(["mount", "--bind", "/dev", str(dev)], check=True)


def _hostname_resolves(root: Path) -> None:
    """Asterisk looks up its own host name on every call (to find "our IP"); without an
    entry it falls back to DNS, which this closed network does not answer."""
    hosts = root / "etc/hosts"
    name = socket.gethostname()
    text = hosts.read_text() if hosts.exists() else ""
    if not any(name in line.split()[1:] for line in text.splitlines() if line and not line.startswith("#")):
        hosts.write_text(text + f"127.0.0.1 {name}  # added by verbund112 lab\n")


def asterisk_ids(root: Path) -> tuple[int, int]:
    """uid and gid of the asterisk user inside the root (another name on the host)."""
    for line in (root / "etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == "asterisk":
            return int(fields[2]), int(fields[3])
    raise RootfsError("no asterisk user in the root filesystem")
