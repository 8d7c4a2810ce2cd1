"""Rules admin: reload (SIGHUP, API), upload (validated, dry run), and the audit trail of both.

Checking rules reads files and builds the district index: blocking work that
must never hold up the event loop answering FastAGI. It runs in a thread of
its own, one check at a time, under a deadline; a check that overruns is
refused (its result is thrown away) and the rules in force stay.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from routing.rules import Rules, RulesError
from verbund112.rules_holder import RulesChange, RulesHolder
from verbund112.store import Store, StoreError
from verbund112.store.records import AuditEntry

log = logging.getLogger(__name__)

CHECK_WITHIN_S = 10.0  # the shipped rules check in about 0.2 s


class RulesAdmin:
    def __init__(
        self, *, site: str, holder: RulesHolder, store: Store, clock: Callable[[], float] = time.time,
        check_within: float = CHECK_WITHIN_S,
    ) -> None:  # fmt: skip
        self.site = site
        self.holder = holder
        self._store = store
        self._clock = clock
        self._check_within = check_within
        # one worker: a check that overran keeps its thread busy, the next one waits behind it
        self._checker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rules-check")
        self._one_change = asyncio.Lock()

    @property
    def rules(self) -> Rules | None:
        return self.holder.rules

    @property
    def last_error(self) -> str | None:
        return self.holder.last_error

    async def change(self, who: str, text: str | None = None, dry_run: bool = False) -> RulesChange:
        """Reload from disk (text None) or replace with uploaded text; audited in the store."""
        action = "reload" if text is None else ("dry-run" if dry_run else "upload")
        async with self._one_change:
            try:
                new = await self._checked(text)
                change = self.holder.preview(new) if dry_run else self.holder.apply(new, text)
            except Exception as exc:
                if isinstance(exc, RulesError):
                    self.holder.refused(exc)
                await self._audit(who, action, "refused", problems=str(exc)[:4000])
                raise
        await self._audit(
            who, action, "applied" if change.applied else "validated",
            old=change.old_digest, new=change.new_digest, changes=change.changes[:200],
        )  # fmt: skip
        return change

    async def _checked(self, text: str | None) -> Rules:
        checking = asyncio.get_running_loop().run_in_executor(self._checker, self.holder.check, text)
        try:
            async with asyncio.timeout(self._check_within):
                return await checking
        except TimeoutError as exc:
            raise RulesError([f"checking the rules took longer than {self._check_within:g} s"]) from exc

    def close(self) -> None:
        """At stop: checks not yet started are dropped (one that runs finishes on its own)."""
        self._checker.shutdown(wait=False, cancel_futures=True)

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
