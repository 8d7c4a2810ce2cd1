"""The routing rules a running service uses, swapped atomically on reload.

A reload (SIGHUP, admin API, upload) validates the new file completely before
anything changes; a file that fails is refused and the last good rules keep
routing. Uploaded rules are written next to the current file (so its data
files resolve the same way) and moved into place with os.replace.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from routing.rules import Rules, RulesError, load_rules
from routing.rules_diff import describe_changes
from verbund112 import shipped

log = logging.getLogger(__name__)

SHIPPED_RULES = shipped.rules_file()


@dataclass(frozen=True)
class RulesChange:
    old_digest: str | None
    new_digest: str
    changes: list[str]
    applied: bool


class RulesHolder:
    def __init__(self, path: Path | None) -> None:
        self.path = (path or SHIPPED_RULES).resolve()
        self.rules: Rules | None = None
        self.last_error: str | None = None

    def load_initial(self) -> None:
        """Load at start; without valid rules every call is answered where it entered."""
        try:
            self.rules = load_rules(self.path)
            log.info("routing rules %s loaded (%s)", self.path, self.rules.digest[:12])
        except RulesError as exc:
            self.last_error = str(exc)
            log.error("routing rules %s refused; calls stay where they enter until fixed:\n%s", self.path, exc)

    def reload(self) -> RulesChange:
        """Re-read the rules file. Raises RulesError (and keeps the old rules) if it fails."""
        return self._swap(self._validated(self.path), applied=True)

    def replace(self, text: str, dry_run: bool) -> RulesChange:
        """Validate uploaded rules text; unless dry_run, write it in place and use it."""
        if len(text) > 1_000_000:
            raise RulesError(["uploaded rules: larger than 1 MB"])
        handle, name = tempfile.mkstemp(prefix=".upload-", suffix=".yaml", dir=self.path.parent)
        candidate = Path(name)
        try:
            with os.fdopen(handle, "w") as out:
                out.write(text)
            new = self._validated(candidate)
            if dry_run:
                return self._change(new, applied=False)
            os.replace(candidate, self.path)
            new = load_rules(self.path)  # its source is the real path now
            return self._swap(new, applied=True)
        finally:
            candidate.unlink(missing_ok=True)

    def _validated(self, path: Path) -> Rules:
        try:
            return load_rules(path)
        except RulesError as exc:
            self.last_error = str(exc)
            log.warning("new routing rules refused, the last good rules stay in force:\n%s", exc)
            raise

    def _change(self, new: Rules, applied: bool) -> RulesChange:
        old = self.rules
        changes = describe_changes(old, new) if old is not None else ["(no rules were loaded before)"]
        return RulesChange(old.digest if old else None, new.digest, changes, applied)

    def _swap(self, new: Rules, applied: bool) -> RulesChange:
        change = self._change(new, applied)
        self.rules = new  # one reference assignment: a call sees the old or the new rules, never a mix
        self.last_error = None
        log.info("routing rules now %s (%d changes)", new.digest[:12], len(change.changes))
        return change
