"""Rules admin: reload (SIGHUP, API), upload (validated, dry run), and the audit trail of both."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable

from routing.rules import Rules, RulesError
from verbund112.rules_holder import RulesChange, RulesHolder
from verbund112.store import Store, StoreError
from verbund112.store.records import AuditEntry

log = logging.getLogger(__name__)


class RulesAdmin:
    def __init__(self, *, site: str, holder: RulesHolder, store: Store, clock: Callable[[], float] = time.time) -> None:
        self.site = site
        self.holder = holder
        self._store = store
        self._clock = clock

    @property
    def rules(self) -> Rules | None:
        return self.holder.rules

    @property
    def last_error(self) -> str | None:
        return self.holder.last_error

    async def change(self, who: str, text: str | None = None, dry_run: bool = False) -> RulesChange:
        """Reload from disk (text None) or replace with uploaded text; audited in the store."""
        action = "reload" if text is None else ("dry-run" if dry_run else "upload")
        try:
            change = self.holder.reload() if text is None else self.holder.replace(text, dry_run)
        except Exception as exc:
            await self._audit(who, action, "refused", problems=str(exc)[:4000])
            raise
        await self._audit(
            who, action, "applied" if change.applied else "validated",
            old=change.old_digest, new=change.new_digest, changes=change.changes[:200],
        )  # fmt: skip
        return change

    async def reload_quietly(self, who: str) -> None:
        """SIGHUP: a refused file is logged and audited; the old rules stay."""
        with contextlib.suppress(RulesError):
            await self.change(who)

    async def audit_trail(self) -> list[dict[str, object]]:
        return [entry.as_dict() for entry in await self._store.read_audit()]

    async def _audit(self, who: str, action: str, result: str, **details: object) -> None:
        entry = AuditEntry.model_validate(
            {"at": self._clock(), "site": self.site, "who": who, "action": action, "result": result, **details}
        )
        try:
            await self._store.append_audit(entry)
        except StoreError as exc:
            log.error("rules audit entry not stored (%s): %s", exc, entry.to_json())
