"""Every Redis key and channel of the Verbund, in one table.

Both sites share one Redis. Caller numbers and positions are personal data:
nothing that holds them lives longer than PERSONAL_DATA_TTL_S (60 minutes).
docs/store.md is this table for operators; tests/unit/test_store_records.py
checks the two agree.
"""

from __future__ import annotations

from dataclasses import dataclass

PERSONAL_DATA_TTL_S = 3600
AUDIT_KEEP = 1000  # rules audit entries kept (no personal data)
MOVES_KEEP_S = 3600  # overflow moves kept for the supervisor view
AML_TRAIL_KEEP = 100  # fixes per number
# A number that calls again and again (a pocket dial, a stuck PBX) must not make every card
# heavier: each number keeps its newest calls only, and a card shows the newest few.
CALLS_PER_NUMBER_KEPT = 100


@dataclass(frozen=True)
class Entry:
    pattern: str
    kind: str  # the Redis type, or "channel"
    holds: str  # the record (verbund112.store.records) or value
    expiry: str
    personal: bool


TABLE: tuple[Entry, ...] = (
    Entry(
        "v112:aml:<e164>",
        "list",
        "AmlFixRecord, newest first, at most 100",
        "aml.retention_s (≤ 60 min) after the last fix",
        True,
    ),
    Entry(
        "v112:aml-updates",
        "channel",
        "an E.164 number whose trail has a new fix",
        "-",
        True,
    ),
    Entry(
        "v112:aml-nonce:<nonce>",
        "string",
        "the nonce of a signed AML delivery, so it cannot be played again",
        "2 × aml.signature_window_s",
        False,
    ),
    Entry(
        "v112:call:<call id>",
        "string",
        "CallRecord: what the entry site knew (caller, location, decision)",
        "60 min",
        True,
    ),
    Entry(
        "v112:calls-by-number:<e164>",
        "sorted set",
        "call ids of a number by time, newest 100",
        "60 min",
        True,
    ),
    Entry(
        "v112:answered:<call id>",
        "string",
        "AnsweredMark: site and dispatcher that answered",
        "60 min",
        False,
    ),
    Entry(
        "v112:abandoned",
        "sorted set",
        "call ids of abandoned calls by time",
        "60 min",
        False,
    ),
    Entry(
        "v112:abandoned:<call id>",
        "string",
        "AbandonedCall: caller, site, time, wait",
        "60 min",
        True,
    ),
    Entry(
        "v112:abandoned-updates",
        "channel",
        "a call id added to or removed from the callback list",
        "-",
        False,
    ),
    Entry(
        "v112:site:<site>:heartbeat",
        "string",
        "SiteSnapshot (overflow.state): liveness and queue",
        "redis.heartbeat_ttl",
        False,
    ),
    Entry(
        "v112:overflow:moves",
        "sorted set",
        "MoveRecord: overflow moves of both directions by time",
        "60 min",
        False,
    ),
    Entry(
        "v112:rules:audit",
        "list",
        "AuditEntry: who changed the rules, when, what; newest 1000",
        "none",
        False,
    ),
)

AML_UPDATES_CHANNEL = "v112:aml-updates"
ABANDONED_CHANNEL = "v112:abandoned-updates"
ABANDONED_KEY = "v112:abandoned"
MOVES_KEY = "v112:overflow:moves"
AUDIT_KEY = "v112:rules:audit"


def aml(e164: str) -> str:
    return f"v112:aml:{e164}"


def aml_nonce(nonce: str) -> str:
    return f"v112:aml-nonce:{nonce}"


def call(call_id: str) -> str:
    return f"v112:call:{call_id}"


def calls_by_number(e164: str) -> str:
    return f"v112:calls-by-number:{e164}"


def answered(call_id: str) -> str:
    return f"v112:answered:{call_id}"


def abandoned_entry(call_id: str) -> str:
    return f"{ABANDONED_KEY}:{call_id}"


def heartbeat(site: str) -> str:
    return f"v112:site:{site}:heartbeat"
