"""Which waiting callers to move to the partner centre: a pure decision over snapshots.

A caller is moved when they have waited at least the threshold, or a shorter
time while every local dispatcher is busy, AND the partner is reporting, has
its AMI, and has more available dispatchers than callers already waiting
there and moves already on the way. Against flapping: the partner must have
had that spare capacity for ``spare_for_s`` (hysteresis), callers a desk is
ringing for stay, and a caller is moved at most once (the partner never sends
a moved caller back; if the partner's queue empties, the dialplan returns the
caller to the local queue at their old place). The most senior callers go
first, and each enters the partner's queue ahead of those who began to wait
there later.
"""

from __future__ import annotations

from collections.abc import Set
from dataclasses import dataclass

from overflow.state import SiteSnapshot, Waiting


@dataclass(frozen=True, slots=True)
class DirectionRule:
    """Overflow of callers waiting at one site to its partner (from the rules file)."""

    enabled: bool
    wait_threshold_s: float
    all_busy_after_s: float
    spare_for_s: float


@dataclass(frozen=True, slots=True)
class Move:
    call_id: str
    uniqueid: str
    channel: str
    reason: str
    partner_position: int  # where the caller enters the partner's queue (1 = first)
    return_position: int  # where the caller re-enters the local queue if the partner refuses


@dataclass(frozen=True, slots=True)
class Plan:
    moves: tuple[Move, ...]
    why_not: str  # why nothing (more) is moved; "" when every candidate moved


def spare_capacity(partner: SiteSnapshot, in_flight: int) -> int:
    """Available dispatchers at the partner not already spoken for."""
    return partner.available - len(partner.waiting) - in_flight


def spare_since(previous: float | None, partner: SiteSnapshot | None, in_flight: int, now: float) -> float | None:
    """Since when the partner has had spare capacity without a break (None: it has none)."""
    if partner is None or not partner.ami_connected or spare_capacity(partner, in_flight) <= 0:
        return None
    return previous if previous is not None else now


def queue_position(queue: tuple[Waiting, ...], since: float) -> int:
    """The place of a caller who began to wait at ``since`` among callers ordered by seniority."""
    return 1 + sum(1 for w in queue if w.since < since)


def _blocked(
    partner: SiteSnapshot | None, rule: DirectionRule, now: float, in_flight: int, partner_spare_since: float | None
) -> str:
    """Why no caller may be moved now ("" when moves are possible)."""
    if not rule.enabled:
        return "overflow to the partner is switched off"
    if partner is None:
        return "partner unknown (not reporting)"
    if not partner.ami_connected:
        return "partner's Asterisk is not connected to its service"
    if spare_capacity(partner, in_flight) <= 0:
        return "partner has no spare dispatcher"
    if partner_spare_since is None or now - partner_spare_since < rule.spare_for_s:
        return f"partner has had spare dispatchers for less than {rule.spare_for_s:g} s"
    return ""


def plan_moves(
    local: SiteSnapshot,
    partner: SiteSnapshot | None,
    rule: DirectionRule,
    *,
    now: float,
    in_flight: Set[str],
    partner_spare_since: float | None,
    tried: Set[str] = frozenset(),
) -> Plan:
    """The callers to move now. ``in_flight``: moves on their way (they use up the partner's
    spare dispatchers); ``tried``: calls whose one move was tried already (never again)."""
    blocked = _blocked(partner, rule, now, len(in_flight), partner_spare_since)
    if blocked or partner is None:
        return Plan((), blocked)
    capacity = spare_capacity(partner, len(in_flight))
    all_busy = local.available == 0
    due: list[Move] = []
    for caller in local.waiting:  # longest waiting first
        if not caller.movable or caller.ringing or not caller.channel:
            continue
        if caller.call_id in in_flight or caller.call_id in tried:
            continue
        waited = now - caller.since
        if waited >= rule.wait_threshold_s:
            reason = f"waited {waited:.0f} s (threshold {rule.wait_threshold_s:g} s)"
        elif all_busy and waited >= rule.all_busy_after_s:
            reason = f"waited {waited:.0f} s with every local dispatcher busy"
        else:
            continue
        due.append(
            Move(
                call_id=caller.call_id, uniqueid=caller.uniqueid, channel=caller.channel, reason=reason,
                partner_position=queue_position(partner.waiting, caller.since),
                return_position=queue_position(local.waiting, caller.since),
            )
        )  # fmt: skip
    if not due:
        return Plan((), "no caller waiting long enough")
    return Plan(tuple(due[:capacity]), "" if len(due) <= capacity else "partner's spare dispatchers all spoken for")
