"""The supervisor's view of both centres: this site's queue and callers going round, the partner's report,
the moves of the hour."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from overflow.state import SiteSnapshot
from overflow.supervision import supervisor_json
from verbund112.features.overflow_mover import OverflowMover
from verbund112.features.partner_watch import PartnerWatch
from verbund112.store import Store, StoreError
from verbund112.store.keys import MOVES_KEEP_S


class SupervisorView:
    def __init__(
        self, *, mover: OverflowMover, watch: PartnerWatch, store: Store,
        own_snapshot: Callable[[float], SiteSnapshot], circling_alarm_after_s: float,
        rules: Callable[[], dict[str, Any]] | None = None,
    ) -> None:  # fmt: skip
        self._mover = mover
        self._watch = watch
        self._store = store
        self._own_snapshot = own_snapshot
        self._circling_alarm_after_s = circling_alarm_after_s
        self._rules = rules  # whether both sites route by the same rules (RulesAgreement.status)

    async def view(self, now: float) -> dict[str, Any]:
        moves: list[dict[str, Any]] = []
        moves_problem = ""
        try:
            moves = [move.as_dict() for move in await self._store.recent_moves(now - MOVES_KEEP_S)]
        except StoreError as exc:
            moves_problem = f"Redis: {exc}"
        return supervisor_json(
            own=self._own_snapshot(now),
            partner=self._watch.snapshot,
            partner_site=self._watch.partner,
            partner_problem=self._watch.problem,
            moves=moves,
            moves_problem=moves_problem,
            why_no_move=self._mover.last_plan.why_not,
            now=now,
            circling_alarm_after_s=self._circling_alarm_after_s,
            rules=self._rules() if self._rules is not None else None,
        )
