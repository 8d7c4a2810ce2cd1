"""The live state of one centre's 112 queue, and its snapshot shared with the partner.

``QueueView`` follows this site's typed queue events (telephony.events) and
can be rebuilt from a QueueStatus answer after an AMI (re)connect. Its
``snapshot()`` is frozen data: the overflow policy reads it, the service puts
it into Redis for the partner, the supervisor view shows it. A snapshot read
back from Redis that is too old or malformed is refused (``SnapshotError``):
an unknown partner is never taken for an idle one.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from overflow.circling import Circling
from telephony import events
from telephony.dialplan import INTERSITE_CHANNEL_PREFIX

# A call handed over by the partner is remembered this long, so that the
# partner can confirm its move from our snapshot.
ARRIVAL_MEMORY_S = 60.0


class SnapshotError(ValueError):
    """A partner's snapshot that cannot be trusted (stale, malformed)."""


class DeskState(enum.StrEnum):
    AVAILABLE = "available"
    RINGING = "ringing"
    TALKING = "talking"
    PAUSED = "paused"
    UNAVAILABLE = "unavailable"  # not registered, unknown or invalid: not logged in


def desk_state(status: events.MemberStatus, paused: bool, in_call: bool) -> DeskState:
    S = events.MemberStatus
    if status in (S.UNAVAILABLE, S.INVALID, S.UNKNOWN):
        return DeskState.UNAVAILABLE
    if paused:
        return DeskState.PAUSED
    if status in (S.RINGING, S.RINGINUSE):
        return DeskState.RINGING
    if in_call or status in (S.INUSE, S.BUSY, S.ONHOLD):
        return DeskState.TALKING
    return DeskState.AVAILABLE


@dataclass(frozen=True, slots=True)
class Waiting:
    """A caller waiting in a queue."""

    call_id: str
    since: float  # when the caller joined this queue (epoch seconds)
    from_site: str = ""  # the partner handed the call over
    moved: bool = False  # the service moved it once already
    ringing: bool = False  # a dispatcher's desk is ringing for this caller right now
    uniqueid: str = ""  # local only: not shared with the partner
    channel: str = ""  # local only

    @property
    def movable(self) -> bool:
        """Moved at most once: never a caller the partner sent, or one we moved before."""
        return not self.from_site and not self.moved


@dataclass(frozen=True, slots=True)
class Arrival:
    call_id: str
    from_site: str
    at: float


@dataclass(frozen=True, slots=True)
class SiteSnapshot:
    site: str
    at: float
    ami_connected: bool
    waiting: tuple[Waiting, ...]  # longest waiting first
    desks: tuple[tuple[str, DeskState], ...]  # sorted by dispatcher
    arrivals: tuple[Arrival, ...] = ()
    circling: tuple[Circling, ...] = ()  # callers going round between the sites, longest first
    rules_digest: str = ""  # sha256 of the routing rules in force ("": none loaded, or an older partner)

    def count(self, state: DeskState) -> int:
        return sum(1 for _, desk in self.desks if desk is state)

    @property
    def available(self) -> int:
        return self.count(DeskState.AVAILABLE)

    @property
    def logged_in(self) -> int:
        return len(self.desks) - self.count(DeskState.UNAVAILABLE)

    def longest_wait(self, now: float) -> float:
        return max((now - w.since for w in self.waiting), default=0.0)

    def to_json(self) -> dict[str, Any]:
        """What the partner and the supervisor see: no channels, no numbers."""
        return {
            "site": self.site,
            "at": self.at,
            "ami_connected": self.ami_connected,
            "waiting": [_waiting_json(w) for w in self.waiting],
            "desks": {name: state.value for name, state in self.desks},
            "arrivals": [{"call_id": a.call_id, "from_site": a.from_site, "at": a.at} for a in self.arrivals],
            "circling": [{"call_id": c.call_id, "entered_at": c.entered_at, "rounds": c.rounds,
                          "last_round_at": c.last_round_at} for c in self.circling],
            "rules_digest": self.rules_digest,
        }  # fmt: skip

    @classmethod
    def from_json(cls, data: Any, now: float, max_age_s: float) -> SiteSnapshot:
        """A partner's snapshot from Redis; SnapshotError when stale or malformed."""
        try:
            at = _finite(data["at"])
            if now - at > max_age_s:
                raise SnapshotError(f"snapshot is {now - at:.1f} s old")
            waiting = tuple(
                Waiting(
                    call_id=str(w["call_id"]), since=_finite(w["since"]), from_site=str(w.get("from_site", "")),
                    moved=bool(w.get("moved", False)), ringing=bool(w.get("ringing", False)),
                )
                for w in data["waiting"]
            )  # fmt: skip
            desks = tuple(sorted((str(name), DeskState(state)) for name, state in dict(data["desks"]).items()))
            arrivals = tuple(
                Arrival(str(a["call_id"]), str(a["from_site"]), _finite(a["at"])) for a in data.get("arrivals", [])
            )
            circling = tuple(
                Circling(str(c["call_id"]), _finite(c["entered_at"]), int(c["rounds"]), _finite(c["last_round_at"]))
                for c in data.get("circling", [])  # absent from an older partner's snapshot
            )
            return cls(str(data["site"]), at, bool(data["ami_connected"]), waiting, desks, arrivals, circling,
                       _digest(data.get("rules_digest")))  # fmt: skip
        except SnapshotError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise SnapshotError(f"malformed snapshot: {exc!r}") from exc


def _waiting_json(w: Waiting) -> dict[str, Any]:
    return {"call_id": w.call_id, "since": w.since, "from_site": w.from_site, "moved": w.moved, "ringing": w.ringing}


def _digest(value: Any) -> str:
    # not a reason to distrust the whole report (the queue state is what the overflow needs): unknown
    return value if isinstance(value, str) and _DIGEST.fullmatch(value) else ""


_DIGEST = re.compile(r"[0-9a-f]{64}")


def _finite(value: Any) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"not a finite number: {value!r}")
    return number


class QueueView:
    """This site's queue, kept current from typed AMI events (no I/O here)."""

    def __init__(self, site: str, partner: str, queue: str) -> None:
        self.site = site
        self.partner = partner
        self.queue = queue
        self._waiting: dict[str, Waiting] = {}  # by the caller channel's Uniqueid
        self._desks: dict[str, DeskState] = {}
        self._arrivals: list[Arrival] = []

    def reset(self, listed: Iterable[events.SiteEvent], now: float) -> None:
        """Rebuild from a QueueStatus answer (after every AMI connect: events may have been missed)."""
        self._waiting.clear()
        self._desks.clear()
        for event in listed:
            if isinstance(event, events.CallerWaiting) and event.queue == self.queue:
                # QueueStatus carries no channel variables: a caller on the
                # inter-site trunk came from the partner and stays put.
                from_partner = event.channel.startswith(INTERSITE_CHANNEL_PREFIX)
                self._waiting[event.uniqueid] = Waiting(
                    call_id=event.call_id, since=now - event.wait_s, from_site=self.partner if from_partner else "",
                    moved=event.moved, uniqueid=event.uniqueid, channel=event.channel,
                )  # fmt: skip
            else:
                self.apply(event, now)

    def apply(self, event: events.SiteEvent, now: float) -> None:
        if isinstance(event, events.DispatcherStateChanged):
            if event.queue == self.queue and event.dispatcher:
                self._desks[event.dispatcher] = desk_state(event.status, event.paused, event.in_call)
            return
        if getattr(event, "queue", self.queue) != self.queue:
            return
        if isinstance(event, events.CallerJoinedQueue):
            self._waiting[event.uniqueid] = Waiting(
                call_id=event.call_id, since=event.at or now, from_site=event.from_site, moved=event.moved,
                uniqueid=event.uniqueid, channel=event.channel,
            )  # fmt: skip
            if event.from_site:
                self._arrivals.append(Arrival(event.call_id, event.from_site, event.at or now))
        elif isinstance(event, events.CallerLeftQueue | events.CallerAbandonedQueue | events.DispatcherAnswered):
            self._waiting.pop(event.uniqueid, None)
        elif isinstance(event, events.DispatcherRinging | events.DispatcherNotAnswering):
            if (waiting := self._waiting.get(event.uniqueid)) is not None:
                ringing = isinstance(event, events.DispatcherRinging)
                self._waiting[event.uniqueid] = replace(waiting, ringing=ringing)
        elif isinstance(event, events.ChannelHungUp):
            self._waiting.pop(event.uniqueid, None)

    def waiting(self, uniqueid: str) -> Waiting | None:
        return self._waiting.get(uniqueid)

    def snapshot(self, now: float, ami_connected: bool) -> SiteSnapshot:
        self._arrivals = [a for a in self._arrivals if now - a.at <= ARRIVAL_MEMORY_S]
        return SiteSnapshot(
            site=self.site,
            at=now,
            ami_connected=ami_connected,
            waiting=tuple(sorted(self._waiting.values(), key=lambda w: w.since)),
            desks=tuple(sorted(self._desks.items())),
            arrivals=tuple(self._arrivals),
        )


def desks_by_state(snapshot: SiteSnapshot) -> Mapping[str, int]:
    return {state.value: snapshot.count(state) for state in DeskState}
