"""Installing a rendered Asterisk configuration into a folder (``/etc/asterisk``) safely.

What ``verbund112 asterisk-config render`` does with the files it rendered:

- A manifest (``verbund112-manifest.json``) in the folder names every file verbund112 wrote there,
  with its SHA-256. Only those files are ever replaced. A file of the same name that is not in it
  (Debian's stock ``pjsip.conf``, a file an admin made) is left alone and named, and then nothing
  is written at all: half of our configuration beside half of another is worse than either.
- Every file it replaces or removes goes first into a dated backup folder beside them
  (``verbund112-backup/<UTC time>/``, with the old manifest), so a rollback is a copy back.
- Each file is written to a temporary file in the same folder, given its owner and mode, and
  moved into place (``os.replace``): Asterisk never reads a half-written file, nor one it may not
  read. Mode 0640, owner ``root:asterisk`` by default: Asterisk (group ``asterisk``) reads them and
  cannot rewrite its own dialplan; nobody else reads them (several hold secrets).
- The unified diff against what is installed is shown with secret values masked.
"""

from __future__ import annotations

import difflib
import grp
import hashlib
import json
import os
import pwd
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from verbund112 import __version__

MANIFEST = "verbund112-manifest.json"
BACKUPS = "verbund112-backup"
FILE_MODE = 0o640
NEW_FOLDER_MODE = 0o750
BACKUP_FOLDER_MODE = 0o700  # the backups hold the same secrets, for root only
DEFAULT_OWNER = "root:asterisk"
_SECRET_LINE = re.compile(r"^(\s*(?:secret|password)\s*=\s*)(\S.*)$", re.MULTILINE)


class InstallError(ValueError):
    """The files cannot be installed as asked (an unknown owner, a manifest that is not ours)."""


def masked(text: str) -> str:
    """The text with the values of ``secret =`` and ``password =`` lines replaced, for diffs and checks."""
    return _SECRET_LINE.sub(r"\g<1>********", text)


def _digest(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


@dataclass(frozen=True)
class Owner:
    uid: int
    gid: int

    @classmethod
    def parse(cls, spec: str) -> Owner:
        """``user:group``, by name or number."""
        user, sep, group = spec.partition(":")
        if not sep or not user or not group:
            raise InstallError(f"owner {spec!r}: write it as user:group")
        try:
            uid = int(user) if user.isdigit() else pwd.getpwnam(user).pw_uid
        except KeyError:
            raise InstallError(f"owner {spec!r}: there is no user {user!r} on this host") from None
        try:
            gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
        except KeyError:
            raise InstallError(
                f"owner {spec!r}: there is no group {group!r} on this host (install Asterisk first, "
                "or name the owner with --owner for a folder Asterisk does not read)"
            ) from None
        return cls(uid, gid)


def read_manifest(directory: Path) -> dict[str, str]:
    """The files verbund112 wrote into the folder, by name, with their SHA-256 (empty: none)."""
    path = directory / MANIFEST
    if not path.exists():
        return {}
    try:
        files = json.loads(path.read_text())["files"]
        if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
            raise TypeError("files is not a mapping of names to digests")
        return {str(name): value for name, value in files.items()}
    except (ValueError, KeyError, TypeError) as exc:
        raise InstallError(f"{path}: not a verbund112 manifest ({exc}); move it away") from exc


@dataclass
class Plan:
    """What installing the rendered files into a folder would do."""

    directory: Path
    files: dict[str, str]  # everything rendered
    changed: list[str] = field(default_factory=list)  # new or different: written
    unchanged: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)  # there, but not written by verbund112: left alone
    edited: list[str] = field(default_factory=list)  # ours, but changed by hand since (kept in the backup)
    stale: list[str] = field(default_factory=list)  # ours from an earlier render, no longer rendered: removed
    diff: list[str] = field(default_factory=list)  # unified diff, secrets masked

    @property
    def blocked(self) -> bool:
        return bool(self.foreign)


def plan(files: dict[str, str], directory: Path) -> Plan:
    """Compare the rendered files with the folder; nothing is changed."""
    manifest = read_manifest(directory) if directory.is_dir() else {}
    result = Plan(directory, files)
    for name, content in sorted(files.items()):
        target = directory / name
        installed = target.read_text(errors="replace") if target.is_file() else None
        if installed == content:
            result.unchanged.append(name)
            continue
        if target.exists() and name not in manifest:
            result.foreign.append(name)
        elif installed is not None and _digest(installed.encode()) != manifest.get(name):
            result.edited.append(name)
        result.changed.append(name)
        if installed is not None and masked(installed) == masked(content):
            result.diff.append(f"# {name}: only secret values differ\n")
            continue
        result.diff += difflib.unified_diff(
            masked(installed or "").splitlines(keepends=True), masked(content).splitlines(keepends=True),
            f"installed/{name}" if installed is not None else "/dev/null", f"rendered/{name}",
        )  # fmt: skip
    result.stale = sorted(name for name in manifest if name not in files and (directory / name).exists())
    for name in result.stale:
        result.diff += difflib.unified_diff(
            masked((directory / name).read_text(errors="replace")).splitlines(keepends=True), [],
            f"installed/{name}", "/dev/null",
        )  # fmt: skip
    return result


def apply(to_do: Plan, owner: Owner, now: datetime | None = None) -> Path | None:
    """Write what the plan says; returns the backup folder (None: nothing was replaced)."""
    if to_do.blocked:
        raise InstallError(f"{to_do.directory}: not written by verbund112, left alone: {', '.join(to_do.foreign)}")
    directory = to_do.directory
    if not directory.exists():
        directory.mkdir(parents=True, mode=NEW_FOLDER_MODE)
        os.chown(directory, owner.uid, owner.gid)
    replaced = [name for name in to_do.changed if (directory / name).exists()] + to_do.stale
    backup = _back_up(directory, replaced, now or datetime.now(UTC)) if replaced else None
    for name in to_do.changed:
        _write_atomically(directory / name, to_do.files[name].encode(), owner)
    for name in to_do.stale:
        (directory / name).unlink()
    written = {name: _digest(content.encode()) for name, content in sorted(to_do.files.items())}
    manifest = {"generated_by": f"verbund112 {__version__}", "at": (now or datetime.now(UTC)).isoformat(),
                "files": written}  # fmt: skip
    _write_atomically(directory / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode(), owner)
    return backup


def _back_up(directory: Path, names: list[str], now: datetime) -> Path:
    root = directory / BACKUPS
    root.mkdir(mode=BACKUP_FOLDER_MODE, exist_ok=True)
    backup = root / now.strftime("%Y%m%dT%H%M%S.%fZ")
    backup.mkdir(mode=BACKUP_FOLDER_MODE)
    for name in [*names, MANIFEST]:
        if (directory / name).exists():
            shutil.copy2(directory / name, backup / name)  # content, mode and times
    return backup


def _write_atomically(target: Path, content: bytes, owner: Owner) -> None:
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(handle, "wb") as out:  # mkstemp: mode 0600 from the start
            out.write(content)
            out.flush()
            os.fsync(out.fileno())
        os.chown(temporary, owner.uid, owner.gid)
        os.chmod(temporary, FILE_MODE)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
