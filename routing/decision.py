"""The routing decision for one 112 call.

For now every call stays at the site where it entered (the local queue); the
location-based rules come with the routing issue. The shape of the decision is
fixed here so that the FastAGI handler and the dialplan contract do not change.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from routing.location import Position


class Route(enum.StrEnum):
    """What the dialplan understands in V112_ROUTE."""

    LOCAL = "local"
    PARTNER = "partner"


@dataclass(frozen=True, slots=True)
class CallFacts:
    site: str
    call_id: str
    caller_number: str
    position: Position | None
    location_problem: str = ""


@dataclass(frozen=True, slots=True)
class Decision:
    route: Route
    reason: str


def decide(facts: CallFacts) -> Decision:
    return Decision(Route.LOCAL, f"answered where it entered ({facts.site}): no routing rules yet")
