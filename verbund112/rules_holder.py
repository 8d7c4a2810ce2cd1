"""The routing rules a running service uses, swapped atomically on reload.

A reload (SIGHUP, admin API, upload) validates the new file completely before
anything changes; a file that fails is refused and the last good rules keep
routing. Uploaded rules are checked next to the current file (so its data
files resolve the same way), then written and moved into place with os.replace.
"""

from __future__ import annotations

import dataclasses
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

    def check(self, text: str | None) -> Rules:
        """Validate the rules file (text None) or uploaded text; nothing changes.

        Blocking file and CPU work: the service runs it off the event loop
        (verbund112.features.rules_admin). Uploaded text is written next to the
        rules file for the check, so its data files resolve the same way, and
        removed again. Raises RulesError.
        """
        if text is None:
            return load_rules(self.path)
        if len(text) > 1_000_000:
            raise RulesError(["uploaded rules: larger than 1 MB"])
        candidate = self._write_beside(text)
        try:
            return load_rules(candidate)
        finally:
            candidate.unlink(missing_ok=True)

    def refused(self, problem: RulesError) -> None:
        self.last_error = str(problem)
        log.warning("new routing rules refused, the last good rules stay in force:\n%s", problem)

    def apply(self, new: Rules, text: str | None) -> RulesChange:
        """Put checked rules in force; uploaded text is written over the rules file first (atomically)."""
        if text is not None:
            written = self._write_beside(text)
            try:
                os.replace(written, self.path)
            finally:
                written.unlink(missing_ok=True)
            new = dataclasses.replace(new, source=str(self.path))  # checked under the upload's name
        return self._swap(new)

    def _write_beside(self, text: str) -> Path:
        handle, name = tempfile.mkstemp(prefix=".upload-", suffix=".yaml", dir=self.path.parent)
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                out.write(text)
        except BaseException:
            Path(name).unlink(missing_ok=True)
            raise
        return Path(name)

    def preview(self, new: Rules) -> RulesChange:
        """What checked rules would change (a dry run)."""
        return self._change(new, applied=False)

    def _change(self, new: Rules, applied: bool) -> RulesChange:
        old = self.rules
        changes = describe_changes(old, new) if old is not None else ["(no rules were loaded before)"]
        return RulesChange(old.digest if old else None, new.digest, changes, applied)

    def _swap(self, new: Rules) -> RulesChange:
        change = self._change(new, applied=True)
        self.rules = new  # one reference assignment: a call sees the old or the new rules, never a mix
        self.last_error = None
        log.info("routing rules now %s (%d changes)", new.digest[:12], len(change.changes))
        return change
