"""Every Redis key and channel of the Verbund, in one table.

Both sites share one Redis. Caller numbers and positions are personal data:
no entry that holds them lives longer than PERSONAL_DATA_TTL_S (60 minutes; the
setting redis.personal_data_max_age_s may make it shorter) after it was
written, whatever is appended to its key later (retention.py). ``max_age_s``
of each entry is the most its key's TTL can ever be (tests read every key's TTL
against it).
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
# An abandoned call is listed once: its mark outlives its entry on the callback list (which the
# store refuses once it is older than the personal-data maximum), so a late report of it (the
# dialplan's AstDB outbox read after an AMI reconnect) never lists it again.
ABANDONED_SEEN_S = 2 * PERSONAL_DATA_TTL_S


@dataclass(frozen=True)
class Entry:
    pattern: str
    kind: str  # the Redis type, or "channel"
    holds: str  # the record (verbund112.store.records) or value
    expiry: str
    personal: bool
    max_age_s: int | None  # the longest TTL the key can have; None: a channel, or kept without expiry


TABLE: tuple[Entry, ...] = (
    Entry(
        "v112:aml:<e164>",
        "list",
        "AmlFixRecord, newest first, at most 100",
        "aml.retention_s (≤ 60 min) after each fix was received; the list expires with its oldest fix",
        True,
        PERSONAL_DATA_TTL_S,
    ),
    Entry(
        "v112:aml-updates",
        "channel",
        "an E.164 number whose trail has a new fix",
        "-",
        True,
        None,
    ),
    Entry(
        "v112:aml-nonce:<nonce>",
        "string",
        "the nonce of a signed AML delivery, so it cannot be played again",
        "2 × aml.signature_window_s",
        False,
        2 * 3600,  # aml.signature_window_s is at most 3600
    ),
    Entry(
        "v112:call:<call id>",
        "string",
        "CallRecord: what the entry site knew (caller, location, decision)",
        "60 min",
        True,
        PERSONAL_DATA_TTL_S,
    ),
    Entry(
        "v112:calls-by-number:<e164>",
        "sorted set",
        "call ids of a number by time, newest 100",
        "60 min after each call; the set expires with its oldest call",
        True,
        PERSONAL_DATA_TTL_S,
    ),
    Entry(
        "v112:answered:<call id>",
        "string",
        "AnsweredMark: site and dispatcher that answered",
        "60 min",
        False,
        PERSONAL_DATA_TTL_S,
    ),
    Entry(
        "v112:abandoned",
        "sorted set",
        "call ids of abandoned calls by time",
        "60 min after each call ended; the set expires with its oldest call",
        False,
        PERSONAL_DATA_TTL_S,
    ),
    Entry(
        "v112:abandoned:<call id>",
        "string",
        "AbandonedCall: caller, site, time, wait",
        "60 min after the call ended",
        True,
        PERSONAL_DATA_TTL_S,
    ),
    Entry(
        "v112:abandoned-updates",
        "channel",
        "a call id added to or removed from the callback list",
        "-",
        False,
        None,
    ),
    Entry(
        "v112:site:<site>:heartbeat",
        "string",
        "SiteSnapshot (overflow.state): liveness and queue",
        "redis.heartbeat_ttl",
        False,
        None,
    ),
    Entry(
        "v112:overflow:moves",
        "sorted set",
        "MoveRecord: overflow moves of both directions by time",
        "60 min after each move; the set expires with its oldest move",
        False,
        MOVES_KEEP_S,
    ),
    Entry(
        "v112:abandoned-seen:<call id>",
        "string",
        "a mark: this call was put on the callback list once (never again)",
        "2 h",
        False,
        ABANDONED_SEEN_S,
    ),
    Entry(
        "v112:rules:audit",
        "list",
        "AuditEntry: who changed the rules, when, what; newest 1000",
        "none",
        False,
        None,
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


def abandoned_seen(call_id: str) -> str:
    return f"v112:abandoned-seen:{call_id}"


def heartbeat(site: str) -> str:
    return f"v112:site:{site}:heartbeat"
