"""The calls of one site, from routing to hangup, as a pure state machine (no I/O, no clock).

- A call *enters* here when this site's routing answered for it (CallRouted):
  the ledger keeps its record, so a card for it needs nothing from the store.
- A dispatcher of this site *answers* it (or a call of the partner): that
  dispatcher's card is kept until the call completes, for a screen that
  reconnects mid-call.
- The entry channel *hangs up*: the call leaves the ledger (whether it was
  abandoned is the dialplan's report, see features/abandoned_calls.py).
- A hangup the service missed (AMI cut at that moment) leaves an entry behind;
  ``expire`` hands such entries back after ``max_age_s`` so they are not kept
  for ever and the driver can say so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from verbund112.store.records import CallRecord

MAX_CALL_AGE_S = 4 * 3600.0  # no 112 call lasts this long; an entry this old lost its hangup
Card = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Entered:
    """A call that entered at this site, until its entry channel hangs up."""

    uniqueid: str
    call_id: str
    caller: str  # E.164 where the number allows it
    at: float
    record: CallRecord | None


class CallLedger:
    def __init__(self, max_age_s: float = MAX_CALL_AGE_S) -> None:
        self.max_age_s = max_age_s
        self._entries: dict[str, Entered] = {}  # by the entry channel's Uniqueid
        self._by_call: dict[str, str] = {}  # call id -> entry Uniqueid
        self._answered_here: set[str] = set()  # call ids of entries answered by a dispatcher here
        self._cards: dict[str, Card] = {}  # dispatcher -> the card of the call they hold

    # -- calls -----------------------------------------------------------------

    def entered(self, uniqueid: str, call_id: str, caller: str, at: float, record: CallRecord | None) -> bool:
        """False if the call id is known: its first entry stays (as its record in the store does)."""
        if call_id in self._by_call:
            return False
        self._entries[uniqueid] = Entered(uniqueid, call_id, caller, at, record)
        self._by_call[call_id] = uniqueid
        return True

    def record_of(self, call_id: str) -> CallRecord | None:
        """What this site knew when it routed the call (None: routed elsewhere, or unknown)."""
        uniqueid = self._by_call.get(call_id)
        entry = None if uniqueid is None else self._entries.get(uniqueid)
        return None if entry is None else entry.record

    def answered(self, call_id: str) -> None:
        """A dispatcher of this site answered the call."""
        if call_id in self._by_call:
            self._answered_here.add(call_id)

    def hung_up(self, uniqueid: str) -> Entered | None:
        """A channel hung up. Its entry if not answered here, or None (answered here, or not an entry)."""
        entry = self._entries.pop(uniqueid, None)
        if entry is None:
            return None  # not an entry channel of ours (a desk, a trunk leg), or already gone
        if self._by_call.get(entry.call_id) == uniqueid:
            del self._by_call[entry.call_id]
        if entry.call_id in self._answered_here:
            self._answered_here.discard(entry.call_id)
            return None
        return entry

    def expire(self, now: float) -> list[Entered]:
        """Entries older than max_age_s: their hangup was missed. They are dropped and returned."""
        stale = [e for e in self._entries.values() if now - e.at > self.max_age_s]
        for entry in stale:
            self._entries.pop(entry.uniqueid, None)
            if self._by_call.get(entry.call_id) == entry.uniqueid:
                del self._by_call[entry.call_id]
            self._answered_here.discard(entry.call_id)
        return stale

    def __len__(self) -> int:
        return len(self._entries)

    # -- cards -------------------------------------------------------------------

    def show(self, dispatcher: str, card: Card) -> None:
        self._cards[dispatcher] = card

    def card_of(self, dispatcher: str) -> Card | None:
        return self._cards.get(dispatcher)

    def shows(self, dispatcher: str, call_id: str) -> bool:
        """Is the dispatcher's card of this call (so a call read again after a reconnect is not popped twice)?"""
        card = self._cards.get(dispatcher)
        return card is not None and card.get("call_id") == call_id

    def completed(self, call_id: str, dispatcher: str) -> bool:
        """The dispatcher's call ended; True if their card was of this call (and is gone now)."""
        card = self._cards.get(dispatcher)
        if card is None or card.get("call_id") != call_id:
            return False
        del self._cards[dispatcher]
        return True

    def holders(self, number: str) -> list[str]:
        """Dispatchers whose card is of a call from this number."""
        return [dispatcher for dispatcher, card in self._cards.items() if card.get("caller") == number]

    def held_numbers(self) -> list[str]:
        """The numbers of the calls dispatchers hold now."""
        return list(dict.fromkeys(str(card["caller"]) for card in self._cards.values() if card.get("caller")))

    def is_newer_aml(self, dispatcher: str, fix_time: float) -> bool:
        """Is an AML fix of this time newer than the one on the dispatcher's card (or the card has none)?"""
        card = self._cards.get(dispatcher)
        if card is None:
            return False
        shown = [loc.get("fix_time") or 0.0 for loc in card.get("locations", ()) if loc.get("source") == "aml"]
        return not shown or fix_time > max(shown)

    def new_location(self, dispatcher: str, location: dict[str, Any]) -> Card:
        """A newer position of the source ``location["source"]`` replaces the card's older one."""
        card = self._cards[dispatcher]
        source = location["source"]
        card["locations"] = [location, *(loc for loc in card["locations"] if loc.get("source") != source)]
        return card
