"""Try the rules on a call that did not happen: for admins (CLI and API).

The same decide() as for real calls; only the facts come from the admin.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

from routing.decision import AmlFix, CallFacts, Decision, SiteStates, decide
from routing.location import CivicAddress, Position
from routing.rules import Rules


def simulate(
    rules: Rules,
    *,
    number: str,
    site: str,
    position: Position | None = None,
    pidf_problem: str = "",
    cell_id: str | None = None,
    aml: AmlFix | None = None,
    alive_sites: frozenset[str] | None = None,
    now: float = 0.0,
    civic: CivicAddress | None = None,
) -> Decision:
    alive = alive_sites if alive_sites is not None else frozenset(rules.spec.sites)
    facts = CallFacts(site, "simulation", number, position, pidf_problem, aml, cell_id, now, civic)
    return decide(facts, rules, SiteStates(alive))


def explain(decision: Decision) -> list[str]:
    """The decision in words, one line per fact."""
    target = {
        "local": f"answered here, queue {decision.queue}",
        "partner": f"handed over to ZLS {decision.centre}, queue {decision.queue}",
        "external": f"forwarded to {decision.centre} at {decision.external_number}",
    }[decision.route.value]
    lines = [f"route: {decision.route.value} ({target})", f"why: {decision.reason}"]
    lines.append("certainty: " + ("certain" if decision.certain else "uncertain or approximate"))
    if decision.caller_e164:
        lines.append(f"caller (E.164): {decision.caller_e164}")
    lines += [f"flag: {flag}" for flag in decision.flags]
    lines += [f"note: {note}" for note in decision.notes]
    return lines


def as_dict(decision: Decision) -> dict[str, Any]:
    def plain(value: Any) -> Any:
        if isinstance(value, enum.Enum):
            return value.value
        if isinstance(value, dict):
            return {key: plain(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [plain(item) for item in value]
        return value

    result: dict[str, Any] = plain(dataclasses.asdict(decision))
    return result
