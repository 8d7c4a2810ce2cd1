"""The supervisor's view of both centres (pure: built from snapshots and the moves log).

What a supervisor of either centre must see at a glance (VESTA View style):
per centre the callers waiting and the longest wait, the dispatchers by state,
and the overflow moves in both directions over the last hour. A partner that
is not reporting is shown as "unknown", never as idle.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from overflow.state import SiteSnapshot, Waiting, desks_by_state


def site_json(snapshot: SiteSnapshot, now: float, circling_alarm_after_s: float) -> dict[str, Any]:
    longest_circling = max((now - c.entered_at for c in snapshot.circling), default=0.0)
    return {
        "state": "live" if snapshot.ami_connected else "no-asterisk",
        "report_age_s": round(max(0.0, now - snapshot.at), 2),
        "waiting": len(snapshot.waiting),
        "longest_wait_s": round(snapshot.longest_wait(now), 1),
        "dispatchers": desks_by_state(snapshot),
        "desks": dict(snapshot.desks),
        "calls_waiting": [_waiting_json(w, now) for w in snapshot.waiting],
        # callers going round between the sites: in no queue for long, so not in "waiting"
        "circling": {
            "count": len(snapshot.circling),
            "longest_s": round(max(0.0, longest_circling), 1),
            "alarm": longest_circling > circling_alarm_after_s,
            "callers": [c.to_json(now) for c in snapshot.circling],
        },
    }


def _waiting_json(w: Waiting, now: float) -> dict[str, Any]:
    return {"call_id": w.call_id, "wait_s": round(now - w.since, 1), "from_site": w.from_site or None,
            "moved": w.moved, "ringing": w.ringing}  # fmt: skip


def rules_json(
    own_site: str, own_digest: str | None, partner_site: str, partner: SiteSnapshot | None
) -> dict[str, Any]:
    """Whether both centres route by the same rules: this site's digest against the partner's last report.

    ``same`` is None while that cannot be known (no rules loaded, the partner not reporting, or a
    partner too old to report its digest): unknown is never shown as "the same".
    """
    partner_digest = (partner.rules_digest or None) if partner is not None else None
    same = own_digest == partner_digest if own_digest and partner_digest else None
    if same:
        text = f"Beide Leitstellen arbeiten mit denselben Routing-Regeln ({(own_digest or '')[:12]})."
    elif same is None:
        text = f"Regelstand der ZLS {partner_site} unbekannt: kein Vergleich der Routing-Regeln möglich."
    else:
        text = (f"ACHTUNG: Die Leitstellen arbeiten mit unterschiedlichen Routing-Regeln (ZLS {own_site} "
                f"{(own_digest or '')[:12]}, ZLS {partner_site} {(partner_digest or '')[:12]}). "
                "Beide Leitstellen müssen dieselben Regeln laden.")  # fmt: skip
    return {"digest": own_digest, "partner_digest": partner_digest, "same": same, "text": text}


def supervisor_json(
    *,
    own: SiteSnapshot,
    partner: SiteSnapshot | None,
    partner_site: str,
    partner_problem: str,
    moves: list[dict[str, Any]],
    moves_problem: str,
    why_no_move: str,
    now: float,
    circling_alarm_after_s: float,
    rules: dict[str, Any] | None = None,
) -> dict[str, Any]:
    sites = {own.site: site_json(own, now, circling_alarm_after_s)}
    if partner is None:
        sites[partner_site] = {"state": "unknown", "problem": partner_problem}
    else:
        sites[partner_site] = site_json(partner, now, circling_alarm_after_s)
    by_direction: dict[str, Counter[str]] = {}
    for move in moves:
        direction = f"{move.get('from')}->{move.get('to')}"
        by_direction.setdefault(direction, Counter())[str(move.get("outcome"))] += 1
    return {
        "at": now,
        "seen_from": own.site,
        "circling_alarm_after_s": circling_alarm_after_s,
        "sites": sites,
        "rules": rules,
        "overflow": {
            "last_hour": {direction: dict(counts) for direction, counts in sorted(by_direction.items())},
            "recent": sorted(moves, key=lambda m: m.get("at", 0), reverse=True)[:20],
            "problem": moves_problem or None,
            "now": why_no_move or "moving",
        },
    }
