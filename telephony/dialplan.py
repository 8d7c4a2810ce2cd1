"""The contract between the service and the dialplan (asterisk-config/templates/extensions.conf.j2).

Pure names and formats, nothing else: every channel variable the service reads
or sets, the replies the dialplan understands, the withdraw-info format of an
overflow move and the inter-site trunk's channel prefix. A name changed here
must change in the template too (tests/unit/test_dialplan_contract.py checks
that every name below appears there).
"""

from __future__ import annotations

# -- set by the dialplan, read by the service (FastAGI GET VARIABLE, AMI channelvars, Getvar) --
CALL_ID = "V112_CALL_ID"  # the Verbund call id: the entry channel's Uniqueid, inherited by every leg
CALLER = "V112_CALLER"  # the caller number, filtered to +0-9 and 32 characters
FROM_SITE = "V112_FROM_SITE"  # set on a call the partner handed over the inter-site trunk
MOVED = "V112_MOVED"  # "1" once the service moved the caller to the partner
GEO_HEADER_LEN = "V112_GEO_HEADER_LEN"  # length of the Geolocation header; "0" or "": no PIDF-LO
GEO_METHOD = "V112_GEO_METHOD"  # GEOLOC_PROFILE(method), filtered
GEO_LOCATION = "V112_GEO_LOCATION"  # GEOLOC_PROFILE(location_info), up to 1024 characters
PANI = "V112_PANI"  # P-Access-Network-Info, filtered
ENTERED_AT = "V112_ENTERED_AT"  # epoch seconds the call entered this site (v112-emergency)
ENTRY_CHANNEL = "V112_ENTRY_CHANNEL"  # the caller's channel, inherited so the answering leg can mark it
ANSWERED = "V112_ANSWERED"  # SHARED on the caller's channel: "1" once a dispatcher of either site answered
ROUND = "V112_ROUND"  # how often neither site took the caller and they went round again
OUTBOX_KEEP_S = "V112_OUTBOX_KEEP_S"  # global: seconds the abandoned-call outbox in AstDB keeps a call

# -- UserEvents the dialplan raises (AMI read class "user") --
CALL_ENDED_EVENT = "V112CallEnded"  # the entry channel hung up: CallId, Number, EntrySite, EnteredAt, EndedAt, Answered
ROUND_EVENT = "V112Round"  # neither site took the caller: CallId, Round, EnteredAt
ANSWERED_EVENT = "V112Answered"  # a dispatcher of either site answered: CallId

# The abandoned-call outbox in AstDB: <family>/<UTC hour YYYYMMDDHH>/<call id> = OUTBOX_VALUE.
# Written by the hangup handler (v112-call-end) for every unanswered call, read by the service
# with DBGetTree after every AMI connect, pruned by the dialplan (the service cannot delete).
ABANDONED_FAMILY = "v112-abandoned"
OUTBOX_SEPARATOR = "|"  # number|entry site|entered at|ended at

# The FastAGI server's first question, so that only our Asterisk can ask: the shared secret in
# verbund112.conf of the rendered configuration (the site secrets' fastagi_secret), read with
# AST_CONFIG. Not a [globals] value (Asterisk logs those at verbose 2 when it loads them) and
# never in the AGI URL (the verbose log shows that too).
FASTAGI_SECRET_FILE = "verbund112.conf"
FASTAGI_SECRET = f"AST_CONFIG({FASTAGI_SECRET_FILE},fastagi,secret)"

# what the routing handler reads in its first round trip
ROUTE_REQUEST_VARIABLES = (CALL_ID, CALLER, GEO_HEADER_LEN, GEO_METHOD, PANI)

# -- set by the service, read by the dialplan --
ROUTE = "V112_ROUTE"  # one of RouteReply; anything else means local
TARGET_NUMBER = "V112_TARGET_NUMBER"  # the number an external route forwards to

# V112_ROUTE values the dialplan branches on (routing.decision.Route spells the same words)
ROUTE_LOCAL = "local"
ROUTE_PARTNER = "partner"
ROUTE_EXTERNAL = "external"
ROUTE_VALUES = (ROUTE_LOCAL, ROUTE_PARTNER, ROUTE_EXTERNAL)

# The FastAGI script the dialplan asks: AGI(agi://.../route,<site>)
ROUTE_SCRIPT = "route"

# The inter-site trunk's channels: a caller on one came from the partner.
INTERSITE_CHANNEL_PREFIX = "PJSIP/intersite-"

# QueueWithdrawCaller's withdraw info: "PPPRRR", two 3-digit places read by substrings
# in v112-overflow (the CUT module is not loaded): the place in the partner's queue,
# and the place back here if the partner does not take the call.
WITHDRAW_PLACE_MAX = 999


def withdraw_info(partner_position: int, return_position: int) -> str:
    """The withdraw info of a move, as v112-overflow reads it."""
    return f"{min(partner_position, WITHDRAW_PLACE_MAX):03d}{min(return_position, WITHDRAW_PLACE_MAX):03d}"


def parse_withdraw_info(info: str) -> tuple[int, int]:
    """The two places of a withdraw info (for tests and tools); ValueError if malformed."""
    if len(info) != 6 or not info.isdigit():
        raise ValueError(f"withdraw info must be six digits, got {info!r}")
    return int(info[:3]), int(info[3:])
