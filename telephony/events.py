"""Typed call events: the only place where raw AMI messages are read.

Everything outside telephony/ sees these frozen dataclasses, never an AMI
dict. AMI events can arrive out of order and with fields missing; a message
that cannot be understood becomes ``None`` (logged at DEBUG by the caller),
never an exception.

Channel variables put on every event by manager.conf ``channelvars``:
V112_CALL_ID (the Verbund call id, shared by both sites), V112_CALLER (the
filtered caller number), V112_FROM_SITE (set when the partner handed the
call over) and V112_MOVED (set once the service moved the caller to the
partner, so that it is never moved a second time).
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from telephony import dialplan

RawMessage = Mapping[str, Any]


class MemberStatus(enum.IntEnum):
    """Device state of a queue member (app_queue AST_DEVICE_*)."""

    UNKNOWN = 0
    NOT_INUSE = 1
    INUSE = 2
    BUSY = 3
    INVALID = 4
    UNAVAILABLE = 5
    RINGING = 6
    RINGINUSE = 7
    ONHOLD = 8


@dataclass(frozen=True, slots=True)
class CallEvent:
    site: str
    call_id: str
    uniqueid: str
    linkedid: str


@dataclass(frozen=True, slots=True)
class CallerJoinedQueue(CallEvent):
    queue: str
    position: int
    caller_number: str
    from_site: str
    channel: str = ""
    moved: bool = False  # the service moved this caller once already
    at: float = 0.0  # Asterisk's Timestamp of the event


@dataclass(frozen=True, slots=True)
class CallerWaiting(CallEvent):
    """A caller in a queue as QueueStatus lists it (no channel variables there)."""

    queue: str
    position: int
    channel: str
    wait_s: int
    moved: bool = False  # V112_MOVED, read separately with Getvar (telephony.ami.queue_status)


@dataclass(frozen=True, slots=True)
class CallerLeftQueue(CallEvent):
    queue: str


@dataclass(frozen=True, slots=True)
class CallerAbandonedQueue(CallEvent):
    """The caller left the queue unanswered (hung up, or was redirected)."""

    queue: str
    hold_time: int


@dataclass(frozen=True, slots=True)
class DispatcherRinging(CallEvent):
    queue: str
    dispatcher: str
    interface: str


@dataclass(frozen=True, slots=True)
class DispatcherNotAnswering(CallEvent):
    """A dispatcher's desk rang for the caller and was not picked up."""

    queue: str
    dispatcher: str


@dataclass(frozen=True, slots=True)
class DispatcherAnswered(CallEvent):
    queue: str
    dispatcher: str
    interface: str
    dispatcher_channel: str
    hold_time: int
    ring_time: int
    caller_number: str
    from_site: str
    answered_at: float = 0.0  # Asterisk's Timestamp of the event (manager.conf timestampevents)
    channel: str = ""  # the caller's channel: an inter-site one only claims its call id
    recovered: bool = False  # read from Status after an AMI connect: the answer itself was missed


@dataclass(frozen=True, slots=True)
class CallCompleted(CallEvent):
    queue: str
    dispatcher: str
    talk_time: int
    hung_up_by: str


@dataclass(frozen=True, slots=True)
class ChannelHungUp(CallEvent):
    channel: str
    cause: int


@dataclass(frozen=True, slots=True)
class DispatcherStateChanged:
    """Not tied to a call: a dispatcher desk changed state in a queue."""

    site: str
    queue: str
    dispatcher: str
    interface: str
    status: MemberStatus
    paused: bool
    in_call: bool


@dataclass(frozen=True, slots=True)
class CallEnded(CallEvent):
    """The entry channel of a 112 call hung up (the dialplan's V112CallEnded, or its AstDB outbox entry).

    Raised by the hangup handler whoever routed the call: the one signal of an
    abandoned call that does not depend on the service having seen the call.
    """

    caller_number: str
    entry_site: str
    entered_at: float
    ended_at: float
    answered: bool  # a dispatcher of either site answered


@dataclass(frozen=True, slots=True)
class CallerWentRound(CallEvent):
    """Neither site took the caller; they go round again (the dialplan's V112Round)."""

    round: int
    entered_at: float


@dataclass(frozen=True, slots=True)
class CallAnswered(CallEvent):
    """A dispatcher of this site or of the partner answered the caller (the dialplan's V112Answered)."""


@dataclass(frozen=True, slots=True)
class BadDialplanEvent:
    """A V112 UserEvent (or outbox entry) that does not parse: logged and counted, never raised."""

    site: str
    name: str
    problem: str


SiteEvent = CallEvent | DispatcherStateChanged | BadDialplanEvent

_CALL_ID_TEXT = re.compile(r"^[-0-9A-Za-z._]{1,80}$")
_NUMBER_TEXT = re.compile(r"^\+?[0-9]{0,32}$")  # what the dialplan's FILTER(+0-9) leaves
_SITE_TEXT = re.compile(r"^[a-z][a-z0-9-]{0,15}$")


class DialplanEventError(ValueError):
    """A field of a V112 UserEvent or outbox entry is malformed (the message names the field, not its value)."""


def _checked(value: str, pattern: re.Pattern[str], field: str) -> str:
    if not pattern.match(value):
        raise DialplanEventError(f"{field} malformed")
    return value


def _epoch(value: str, field: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise DialplanEventError(f"{field} not a number") from None
    if not math.isfinite(number) or number < 0:
        raise DialplanEventError(f"{field} out of range")
    return number


def call_ended(
    site: str, uniqueid: str, linkedid: str, *, call_id: str, number: str, entry_site: str,
    entered_at: str, ended_at: str, answered: str,
) -> CallEnded:  # fmt: skip
    """A CallEnded from the dialplan's text fields; DialplanEventError if one is malformed."""
    if answered not in ("0", "1"):
        raise DialplanEventError("Answered malformed")
    return CallEnded(
        site=site, call_id=_checked(call_id, _CALL_ID_TEXT, "CallId"), uniqueid=uniqueid, linkedid=linkedid,
        caller_number=_checked(number, _NUMBER_TEXT, "Number"),
        entry_site=_checked(entry_site, _SITE_TEXT, "EntrySite"),
        entered_at=_epoch(entered_at, "EnteredAt"), ended_at=_epoch(ended_at, "EndedAt"), answered=answered == "1",
    )  # fmt: skip


def outbox_entry(key: str, value: str, site: str) -> CallEnded:
    """An unanswered call from the AstDB outbox (DBGetTree: Key /<family>/<hour>/<call id>, Val)."""
    parts = key.strip("/").split("/")
    if len(parts) != 3 or parts[0] != dialplan.ABANDONED_FAMILY:
        raise DialplanEventError("outbox key malformed")
    fields = value.split(dialplan.OUTBOX_SEPARATOR)
    if len(fields) != 4:
        raise DialplanEventError("outbox value malformed")
    number, entry_site, entered_at, ended_at = fields
    call_id = parts[2]
    return call_ended(site, call_id, call_id, call_id=call_id, number=number, entry_site=entry_site,
                      entered_at=entered_at, ended_at=ended_at, answered="0")  # fmt: skip


def _user_event(m: RawMessage, site: str) -> SiteEvent | None:
    name = _text(m, "UserEvent")
    uniqueid = _text(m, "Uniqueid")
    linkedid = _text(m, "Linkedid") or uniqueid
    try:
        if name == dialplan.CALL_ENDED_EVENT:
            return call_ended(
                site, uniqueid, linkedid, call_id=_text(m, "CallId"), number=_text(m, "Number"),
                entry_site=_text(m, "EntrySite"), entered_at=_text(m, "EnteredAt"), ended_at=_text(m, "EndedAt"),
                answered=_text(m, "Answered"),
            )  # fmt: skip
        if name == dialplan.ROUND_EVENT:
            call_id = _checked(_text(m, "CallId"), _CALL_ID_TEXT, "CallId")
            try:
                round_number = int(_text(m, "Round"))
            except ValueError:
                raise DialplanEventError("Round not a number") from None
            if round_number < 1:
                raise DialplanEventError("Round out of range")
            entered_at = _epoch(_text(m, "EnteredAt"), "EnteredAt")
            return CallerWentRound(site=site, call_id=call_id, uniqueid=uniqueid, linkedid=linkedid,
                                   round=round_number, entered_at=entered_at)  # fmt: skip
        if name == dialplan.ANSWERED_EVENT:
            call_id = _checked(_text(m, "CallId"), _CALL_ID_TEXT, "CallId")
            return CallAnswered(site=site, call_id=call_id, uniqueid=uniqueid, linkedid=linkedid)
    except DialplanEventError as exc:
        return BadDialplanEvent(site, name, str(exc))
    return None  # another UserEvent: not ours


def channel_variables(message: RawMessage, header: str = "ChanVariable") -> dict[str, str]:
    """``ChanVariable: NAME=value`` headers (one or many) as a dict (message keys lower case)."""
    raw = message.get(header.lower())
    if raw is None:
        return {}
    items = raw if isinstance(raw, list) else [raw]
    variables = {}
    for item in items:
        name, sep, value = str(item).partition("=")
        if sep:
            variables[name.strip()] = value
    return variables


def _int(message: RawMessage, key: str) -> int:
    try:
        return int(str(message.get(key.lower(), "0")).strip() or 0)
    except ValueError:
        return 0


def _text(message: RawMessage, key: str) -> str:
    value = message.get(key.lower(), "")
    if isinstance(value, list):  # a header repeated by a sloppy peer: take the first
        value = value[0] if value else ""
    return str(value)


def _call_fields(message: RawMessage, site: str) -> dict[str, str]:
    variables = channel_variables(message)
    uniqueid = _text(message, "Uniqueid")
    return {
        "site": site,
        # A channel without our variable (not a 112 call) still gets an id.
        "call_id": variables.get(dialplan.CALL_ID) or uniqueid,
        "uniqueid": uniqueid,
        "linkedid": _text(message, "Linkedid") or uniqueid,
    }


def _caller(message: RawMessage) -> str:
    return channel_variables(message).get(dialplan.CALLER) or _text(message, "CallerIDNum")


def _queue_caller_join(m: RawMessage, site: str) -> CallerJoinedQueue:
    variables = channel_variables(m)
    return CallerJoinedQueue(
        **_call_fields(m, site),
        queue=_text(m, "Queue"),
        position=_int(m, "Position"),
        caller_number=_caller(m),
        from_site=variables.get(dialplan.FROM_SITE, ""),
        channel=_text(m, "Channel"),
        moved=variables.get(dialplan.MOVED, "") == "1",
        at=_float(m, "Timestamp"),
    )


def _queue_entry(m: RawMessage, site: str) -> CallerWaiting:
    return CallerWaiting(
        **_call_fields(m, site),
        queue=_text(m, "Queue"),
        position=_int(m, "Position"),
        channel=_text(m, "Channel"),
        wait_s=_int(m, "Wait"),
        moved=False,  # not in the message: read with Getvar
    )


def _agent_ring_no_answer(m: RawMessage, site: str) -> DispatcherNotAnswering:
    return DispatcherNotAnswering(**_call_fields(m, site), queue=_text(m, "Queue"), dispatcher=_text(m, "MemberName"))


def _queue_caller_leave(m: RawMessage, site: str) -> CallerLeftQueue:
    return CallerLeftQueue(**_call_fields(m, site), queue=_text(m, "Queue"))


def _queue_caller_abandon(m: RawMessage, site: str) -> CallerAbandonedQueue:
    return CallerAbandonedQueue(**_call_fields(m, site), queue=_text(m, "Queue"), hold_time=_int(m, "HoldTime"))


def _agent_called(m: RawMessage, site: str) -> DispatcherRinging:
    return DispatcherRinging(
        **_call_fields(m, site),
        queue=_text(m, "Queue"),
        dispatcher=_text(m, "MemberName"),
        interface=_text(m, "Interface"),
    )


def _agent_connect(m: RawMessage, site: str) -> DispatcherAnswered:
    return DispatcherAnswered(
        **_call_fields(m, site),
        queue=_text(m, "Queue"),
        dispatcher=_text(m, "MemberName"),
        interface=_text(m, "Interface"),
        dispatcher_channel=_text(m, "DestChannel"),
        hold_time=_int(m, "HoldTime"),
        ring_time=_int(m, "RingTime"),
        caller_number=_caller(m),
        from_site=channel_variables(m).get(dialplan.FROM_SITE, ""),
        answered_at=_float(m, "Timestamp"),
        channel=_text(m, "Channel"),
        recovered=False,
    )


def _float(message: RawMessage, key: str) -> float:
    try:
        value = float(_text(message, key) or 0.0)
    except ValueError:
        return 0.0
    return value if math.isfinite(value) else 0.0


def _agent_complete(m: RawMessage, site: str) -> CallCompleted:
    return CallCompleted(
        **_call_fields(m, site),
        queue=_text(m, "Queue"),
        dispatcher=_text(m, "MemberName"),
        talk_time=_int(m, "TalkTime"),
        hung_up_by=_text(m, "Reason"),
    )


def _hangup(m: RawMessage, site: str) -> ChannelHungUp:
    return ChannelHungUp(**_call_fields(m, site), channel=_text(m, "Channel"), cause=_int(m, "Cause"))


def _queue_member_status(m: RawMessage, site: str) -> DispatcherStateChanged:
    try:
        status = MemberStatus(_int(m, "Status"))
    except ValueError:
        status = MemberStatus.UNKNOWN
    return DispatcherStateChanged(
        site=site,
        queue=_text(m, "Queue"),
        dispatcher=_text(m, "MemberName"),
        interface=_text(m, "Interface") or _text(m, "Location"),
        status=status,
        paused=_text(m, "Paused") == "1",
        in_call=_text(m, "InCall") == "1",
    )


_PARSERS: dict[str, Callable[[RawMessage, str], SiteEvent | None]] = {
    "queuecallerjoin": _queue_caller_join,
    "queuecallerleave": _queue_caller_leave,
    "queuecallerabandon": _queue_caller_abandon,
    "queueentry": _queue_entry,
    "agentcalled": _agent_called,
    "agentringnoanswer": _agent_ring_no_answer,
    "agentconnect": _agent_connect,
    "agentcomplete": _agent_complete,
    "hangup": _hangup,
    "queuememberstatus": _queue_member_status,
    "queuememberpause": _queue_member_status,
    # the answer to QueueStatus lists members in the same shape
    "queuemember": _queue_member_status,
    # the dialplan's own events (V112CallEnded, V112Round, V112Answered)
    "userevent": _user_event,
}

# Fields without which an event of that kind means nothing.
_REQUIRED: dict[str, tuple[str, ...]] = {
    "queuememberstatus": ("Queue", "MemberName"),
    "queuememberpause": ("Queue", "MemberName"),
    "queueentry": ("Queue", "Uniqueid", "Channel"),
    "queuemember": ("Queue", "Name"),
    "userevent": ("UserEvent",),
}


# What app_queue sets on the caller's channel once a member answered (queues.conf setinterfacevar,
# setqueueentryvar), asked for with Status: the answered calls after a (re)connect.
ANSWERED_CALL_VARIABLES = ("MEMBERNAME", "MEMBERINTERFACE", "QEHOLDTIME")


def answered_calls(answer: list[RawMessage], site: str) -> list[DispatcherAnswered]:
    """The calls a dispatcher of this site holds, from the answer to AMI ``Status`` (Variables: the above).

    A caller held by a dispatcher is a channel in the Queue application that is
    in a bridge and for which app_queue set MEMBERNAME; the desk's channel is the
    other one in that bridge. A caller still waiting (no bridge), the desks'
    own channels and legs to the partner are none.
    """
    channels = [{str(key).lower(): value for key, value in m.items()} for m in answer]
    channels = [m for m in channels if _text(m, "Event").lower() == "status" and _text(m, "Uniqueid")]
    found = []
    for m in channels:
        bridge = _text(m, "BridgeID")
        asked = channel_variables(m, "Variable")
        dispatcher = asked.get("MEMBERNAME", "")
        if _text(m, "Application").lower() != "queue" or not bridge or not dispatcher:
            continue
        desk = next((_text(o, "Channel") for o in channels if o is not m and _text(o, "BridgeID") == bridge), "")
        try:
            hold_time = max(0, int(asked.get("QEHOLDTIME", "0") or 0))
        except ValueError:
            hold_time = 0
        found.append(DispatcherAnswered(
            **_call_fields(m, site), queue=_text(m, "Data").split(",", 1)[0], dispatcher=dispatcher,
            interface=asked.get("MEMBERINTERFACE", ""), dispatcher_channel=desk, hold_time=hold_time, ring_time=0,
            caller_number=_caller(m), from_site=channel_variables(m).get(dialplan.FROM_SITE, ""),
            answered_at=0.0, channel=_text(m, "Channel"), recovered=True,
        ))  # fmt: skip
    return found


def parse(message: RawMessage, site: str) -> SiteEvent | None:
    """The typed event for one AMI message, or None if it is not one we use."""
    # AMI header names are case-insensitive; keep one spelling (lower case).
    return parse_lowered({str(key).lower(): value for key, value in message.items()}, site)


def parse_lowered(message: dict[str, Any], site: str) -> SiteEvent | None:
    """``parse`` of a message whose header names are lower case already (telephony.ami reads them so)."""
    kind = _text(message, "Event").lower()
    parser = _PARSERS.get(kind)
    if parser is None:
        return None
    required = _REQUIRED.get(kind, ("Uniqueid",))
    if any(not _text(message, key) for key in required):
        return None
    if kind == "queuemember":
        # QueueStatus answers call the member name "Name"
        message = {**message, "membername": _text(message, "Name")}
    return parser(message, site)
