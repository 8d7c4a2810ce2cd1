"""The overflow moves of one site as a pure state machine: in flight, attempted, outcome.

A move starts when the mover asks Asterisk to withdraw a waiting caller. It
ends in exactly one outcome:

- ``moved``: the partner's snapshot lists the call as arrived from here;
- ``returned``: the caller joined our queue again (the partner did not take it);
- ``refused``: Asterisk did not withdraw the caller (answered meanwhile, gone);
- ``hung-up``: the caller's channel hung up during the move;
- ``unconfirmed``: none of these within ``confirm_within_s``.

Every call is moved at most once per ATTEMPT_MEMORY_S: nothing is retried.
The driver (verbund112.features.overflow_mover) feeds events and time in and
writes the outcomes out.
"""

from __future__ import annotations

from dataclasses import dataclass

from overflow.policy import Move
from overflow.state import SiteSnapshot

ATTEMPT_MEMORY_S = 3600.0
OUTCOMES = ("moved", "returned", "refused", "hung-up", "unconfirmed")


@dataclass(frozen=True, slots=True)
class InFlight:
    move: Move
    started: float


@dataclass(frozen=True, slots=True)
class MoveOutcome:
    call_id: str
    from_site: str
    to_site: str
    started: float
    outcome: str  # one of OUTCOMES
    reason: str  # why the policy moved the call
    detail: str  # what happened


class MoveLedger:
    def __init__(self, site: str, partner: str) -> None:
        self.site = site
        self.partner = partner
        self._in_flight: dict[str, InFlight] = {}
        self._attempted: dict[str, float] = {}  # call id -> when its one move was tried

    @property
    def in_flight(self) -> frozenset[str]:
        return frozenset(self._in_flight)

    @property
    def tried(self) -> frozenset[str]:
        return frozenset(self._attempted)

    def flight(self, call_id: str) -> InFlight | None:
        return self._in_flight.get(call_id)

    def start(self, move: Move, now: float) -> None:
        self._attempted[move.call_id] = now
        self._in_flight[move.call_id] = InFlight(move, now)

    def refused(self, call_id: str, why: str) -> MoveOutcome | None:
        return self._finish(call_id, "refused", f"Asterisk did not withdraw the caller: {why}")

    def returned(self, call_id: str) -> MoveOutcome | None:
        return self._finish(call_id, "returned", f"{self.partner} did not take the call; back in the queue")

    def hung_up(self, call_id: str, uniqueid: str) -> MoveOutcome | None:
        """A channel hung up; only the moved caller's own channel ends its move."""
        flight = self._in_flight.get(call_id)
        if flight is None or flight.move.uniqueid != uniqueid:
            return None
        return self._finish(call_id, "hung-up", "the caller hung up during the move")

    def partner_report(self, partner: SiteSnapshot | None) -> list[MoveOutcome]:
        """The partner's snapshot confirms the moves it lists as arrived from here."""
        if partner is None:
            return []
        done = []
        for arrival in partner.arrivals:
            if arrival.from_site == self.site and arrival.call_id in self._in_flight:
                outcome = self._finish(arrival.call_id, "moved", f"in the queue of {self.partner}")
                if outcome is not None:
                    done.append(outcome)
        return done

    def expire(self, now: float, confirm_within_s: float) -> list[MoveOutcome]:
        """Moves not confirmed in time end as unconfirmed; old attempts are forgotten."""
        late = [c for c, f in self._in_flight.items() if now - f.started > confirm_within_s]
        detail = f"not seen at {self.partner} within {confirm_within_s:g} s"
        done = [o for c in late if (o := self._finish(c, "unconfirmed", detail)) is not None]
        self._attempted = {c: at for c, at in self._attempted.items() if now - at < ATTEMPT_MEMORY_S}
        return done

    def _finish(self, call_id: str, outcome: str, detail: str) -> MoveOutcome | None:
        flight = self._in_flight.pop(call_id, None)
        if flight is None:
            return None
        return MoveOutcome(call_id, self.site, self.partner, flight.started, outcome, flight.move.reason, detail)
