"""Callers going round between the sites (pure: no I/O, no clock).

When no dispatcher of either centre takes a caller, the dialplan sends them
from the local queue to the partner and back, round after round. With nobody
available anywhere they never sit in a queue for long, so queue counts show
nobody waiting while they ring on. The dialplan reports each round (V112Round,
with the time the call entered) and the answer or the end of the call; this
tracker keeps the callers going round, and the view says how many, since when,
and whether one has gone round longer than the alarm threshold.

A caller whose end was missed (AMI cut at that moment) is forgotten when no
round of theirs was seen for ``forget_after_s``; one still going round comes
back at their next round, with the true time they entered.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Circling:
    """A caller going round: neither site has taken them yet."""

    call_id: str
    entered_at: float  # when the call entered the site (epoch seconds)
    rounds: int
    last_round_at: float

    def to_json(self, now: float) -> dict[str, Any]:
        return {"call_id": self.call_id, "rounds": self.rounds, "wait_s": round(max(0.0, now - self.entered_at), 1)}


@dataclass(frozen=True, slots=True)
class CirclingView:
    callers: tuple[Circling, ...]  # longest first
    longest_s: float
    alarm: bool  # a caller has gone round longer than the alarm threshold

    def to_json(self, now: float) -> dict[str, Any]:
        return {"count": len(self.callers), "longest_s": round(self.longest_s, 1), "alarm": self.alarm,
                "callers": [c.to_json(now) for c in self.callers]}  # fmt: skip


class CirclingTracker:
    def __init__(self, *, alarm_after_s: float, forget_after_s: float) -> None:
        self.alarm_after_s = alarm_after_s
        self.forget_after_s = forget_after_s
        self._callers: dict[str, Circling] = {}

    def went_round(self, call_id: str, rounds: int, entered_at: float, now: float) -> bool:
        """Neither site took the caller this round. True if they were not known to be going round."""
        known = self._callers.get(call_id)
        entered = min(entered_at, now) if entered_at > 0 else (known.entered_at if known else now)
        self._callers[call_id] = Circling(call_id, entered, max(rounds, known.rounds if known else 0), now)
        return known is None

    def done(self, call_id: str) -> bool:
        """Answered or ended: no longer going round. True if they were."""
        return self._callers.pop(call_id, None) is not None

    def forget_all(self) -> None:
        """Reports may have been missed (AMI reconnect): callers still going round come back at their next round."""
        self._callers.clear()

    def expire(self, now: float) -> list[Circling]:
        """Callers with no round seen for forget_after_s (their end was missed): dropped and returned."""
        stale = [c for c in self._callers.values() if now - c.last_round_at > self.forget_after_s]
        for caller in stale:
            del self._callers[caller.call_id]
        return stale

    def view(self, now: float) -> CirclingView:
        live = sorted(
            (c for c in self._callers.values() if now - c.last_round_at <= self.forget_after_s),
            key=lambda c: c.entered_at,
        )
        longest = max((now - c.entered_at for c in live), default=0.0)
        return CirclingView(tuple(live), max(0.0, longest), longest > self.alarm_after_s)

    def __len__(self) -> int:
        return len(self._callers)
