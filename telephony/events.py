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


SiteEvent = CallEvent | DispatcherStateChanged


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


_PARSERS: dict[str, Callable[[RawMessage, str], SiteEvent]] = {
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
}

# Fields without which an event of that kind means nothing.
_REQUIRED: dict[str, tuple[str, ...]] = {
    "queuememberstatus": ("Queue", "MemberName"),
    "queuememberpause": ("Queue", "MemberName"),
    "queueentry": ("Queue", "Uniqueid", "Channel"),
    "queuemember": ("Queue", "Name"),
}


def parse(message: RawMessage, site: str) -> SiteEvent | None:
    """The typed event for one AMI message, or None if it is not one we use."""
    # AMI header names are case-insensitive; keep one spelling (lower case).
    message = {str(key).lower(): value for key, value in message.items()}
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
