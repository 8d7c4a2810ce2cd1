"""AMI messages -> typed call events (telephony.events), table-driven."""

from __future__ import annotations

from typing import Any

import pytest

from telephony import events

CALL_VARS = ["V112_CALL_ID=jena-1700000000.1", "V112_CALLER=+4936411234567", "V112_FROM_SITE="]


def test_agent_connect_names_the_dispatcher_and_carries_the_verbund_call_id() -> None:
    message = {
        "Event": "AgentConnect", "Channel": "PJSIP/carrier-00000001", "Uniqueid": "jena-1700000000.3",
        "Linkedid": "jena-1700000000.3", "CallerIDNum": "+4936411234567", "Queue": "112-jena",
        "MemberName": "jena-d1", "Interface": "PJSIP/jena-d1", "DestChannel": "PJSIP/jena-d1-00000002",
        "HoldTime": "3", "RingTime": "1", "ChanVariable": CALL_VARS,
        "DestChanVariable": ["V112_CALL_ID=jena-1700000000.1"],
    }  # fmt: skip
    event = events.parse(message, "jena")
    assert event == events.DispatcherAnswered(
        site="jena", call_id="jena-1700000000.1", uniqueid="jena-1700000000.3", linkedid="jena-1700000000.3",
        queue="112-jena", dispatcher="jena-d1", interface="PJSIP/jena-d1",
        dispatcher_channel="PJSIP/jena-d1-00000002", hold_time=3, ring_time=1,
        caller_number="+4936411234567", from_site="", channel="PJSIP/carrier-00000001",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("message", "expected_type"),
    [
        (
            {"Event": "QueueCallerJoin", "Uniqueid": "u1", "Queue": "112-jena", "Position": "1"},
            events.CallerJoinedQueue,
        ),
        ({"Event": "QueueCallerLeave", "Uniqueid": "u1", "Queue": "112-jena"}, events.CallerLeftQueue),
        (
            {"Event": "QueueCallerAbandon", "Uniqueid": "u1", "Queue": "112-jena", "HoldTime": "9"},
            events.CallerAbandonedQueue,
        ),
        ({"Event": "AgentCalled", "Uniqueid": "u1", "MemberName": "jena-d1"}, events.DispatcherRinging),
        ({"Event": "AgentComplete", "Uniqueid": "u1", "TalkTime": "30", "Reason": "caller"}, events.CallCompleted),
        ({"Event": "Hangup", "Uniqueid": "u1", "Cause": "16"}, events.ChannelHungUp),
        (
            {"Event": "QueueMemberStatus", "Queue": "112-jena", "MemberName": "jena-d1", "Status": "1"},
            events.DispatcherStateChanged,
        ),
        (
            {"Event": "QueueMember", "Queue": "112-jena", "Name": "jena-d2", "Status": "5"},
            events.DispatcherStateChanged,
        ),
        (
            {"Event": "QueueEntry", "Queue": "112-jena", "Uniqueid": "u1", "Channel": "PJSIP/carrier-1", "Wait": "7"},
            events.CallerWaiting,
        ),
        ({"Event": "AgentRingNoAnswer", "Uniqueid": "u1", "MemberName": "jena-d1"}, events.DispatcherNotAnswering),
        (
            {"Event": "QueueMemberPause", "Queue": "112-jena", "MemberName": "jena-d1", "Paused": "1"},
            events.DispatcherStateChanged,
        ),
        # header names are case-insensitive on the wire
        ({"event": "hangup", "uniqueid": "u1"}, events.ChannelHungUp),
    ],
)
def test_each_used_event_kind_becomes_its_typed_event(message: dict, expected_type: type) -> None:
    assert isinstance(events.parse(message, "jena"), expected_type)


@pytest.mark.parametrize(
    "message",
    [
        {},
        {"Event": "Newexten", "Uniqueid": "u1"},  # not one we use
        {"Event": "AgentConnect"},  # no Uniqueid: cannot be tied to a call
        {"Event": "QueueMemberStatus", "Queue": "112-jena"},  # no member
        {"Response": "Success"},
    ],
)
def test_messages_that_mean_nothing_to_us_become_none(message: dict) -> None:
    assert events.parse(message, "jena") is None


@pytest.mark.parametrize(
    ("fields", "check"),
    [
        ({"Position": "x"}, lambda e: e.position == 0),  # garbage number
        ({"Position": ["2", "3"]}, lambda e: e.position == 0),  # repeated header
        ({"ChanVariable": "no-equals-sign"}, lambda e: e.call_id == "u1"),  # falls back to the Uniqueid
        ({"ChanVariable": "V112_CALL_ID=gera-1.2"}, lambda e: e.call_id == "gera-1.2"),  # a single variable
    ],
)
def test_malformed_fields_degrade_instead_of_raising(fields: dict, check) -> None:
    event = events.parse({"Event": "QueueCallerJoin", "Uniqueid": "u1", "Queue": "112-jena", **fields}, "jena")
    assert event is not None
    assert check(event)


def test_unknown_member_status_number_is_unknown() -> None:
    event = events.parse({"Event": "QueueMemberStatus", "Queue": "q", "MemberName": "d", "Status": "99"}, "jena")
    assert isinstance(event, events.DispatcherStateChanged)
    assert event.status is events.MemberStatus.UNKNOWN


def test_a_caller_joining_carries_channel_time_and_the_moved_mark() -> None:
    message = {
        "Event": "QueueCallerJoin", "Uniqueid": "u1", "Queue": "112-jena", "Position": "2",
        "Channel": "PJSIP/carrier-00000007", "Timestamp": "1700000000.250",
        "ChanVariable": ["V112_CALL_ID=jena-1.7", "V112_MOVED=1", "V112_FROM_SITE="],
    }  # fmt: skip
    event = events.parse(message, "jena")
    assert isinstance(event, events.CallerJoinedQueue)
    assert (event.channel, event.at, event.moved, event.from_site) == (
        "PJSIP/carrier-00000007",
        1700000000.25,
        True,
        "",
    )
    unmarked = events.parse({**message, "ChanVariable": "V112_CALL_ID=jena-1.7"}, "jena")
    assert isinstance(unmarked, events.CallerJoinedQueue) and unmarked.moved is False


def test_a_queue_entry_without_channel_means_nothing() -> None:
    assert events.parse({"Event": "QueueEntry", "Queue": "q", "Uniqueid": "u1"}, "jena") is None


# -- the dialplan's own reports (UserEvents) and its AstDB outbox ----------------------

ENDED = {
    "Event": "UserEvent", "UserEvent": "V112CallEnded", "Uniqueid": "jena-1700000000.0",
    "Linkedid": "jena-1700000000.0", "CallId": "jena-1700000000.0", "Number": "+4915112340001",
    "EntrySite": "jena", "EnteredAt": "1700000000", "EndedAt": "1700000012", "Answered": "0",
    "ChanVariable": CALL_VARS,
}  # fmt: skip


def test_the_end_of_a_call_reported_by_the_hangup_handler() -> None:
    assert events.parse(ENDED, "jena") == events.CallEnded(
        site="jena", call_id="jena-1700000000.0", uniqueid="jena-1700000000.0", linkedid="jena-1700000000.0",
        caller_number="+4915112340001", entry_site="jena", entered_at=1700000000.0, ended_at=1700000012.0,
        answered=False,
    )  # fmt: skip


def test_a_round_and_an_answer_reported_by_the_dialplan() -> None:
    base = {"Event": "UserEvent", "Uniqueid": "jena-1.0", "CallId": "jena-1.0"}
    went = events.parse({**base, "UserEvent": "V112Round", "Round": "3", "EnteredAt": "1700000000"}, "jena")
    assert isinstance(went, events.CallerWentRound) and (went.round, went.entered_at) == (3, 1700000000.0)
    assert isinstance(events.parse({**base, "UserEvent": "V112Answered"}, "jena"), events.CallAnswered)


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"CallId": "jena 1; DROP"}, "CallId malformed"),
        ({"CallId": ""}, "CallId malformed"),
        ({"Number": "+49 151 <script>"}, "Number malformed"),
        ({"EntrySite": "Jena!"}, "EntrySite malformed"),
        ({"EnteredAt": "yesterday"}, "EnteredAt not a number"),
        ({"EndedAt": "nan"}, "EndedAt out of range"),
        ({"EndedAt": "-5"}, "EndedAt out of range"),
        ({"Answered": "yes"}, "Answered malformed"),
        ({"UserEvent": "V112Round", "Round": "0", "EnteredAt": "1"}, "Round out of range"),
        ({"UserEvent": "V112Round", "Round": "x", "EnteredAt": "1"}, "Round not a number"),
    ],
)
def test_a_malformed_report_of_the_dialplan_is_a_bad_event_never_an_exception(changes: dict, problem: str) -> None:
    event = events.parse({**ENDED, **changes}, "jena")
    assert isinstance(event, events.BadDialplanEvent) and event.problem == problem


def test_other_user_events_mean_nothing_to_us() -> None:
    assert events.parse({**ENDED, "UserEvent": "SomethingElse"}, "jena") is None


def test_an_outbox_entry_of_astdb_is_an_unanswered_call() -> None:
    entry = events.outbox_entry(
        "/v112-abandoned/2026120123/jena-1.5", "+4915112340001|jena|1700000000|1700000009", "jena"
    )
    assert (entry.call_id, entry.caller_number, entry.entry_site, entry.answered) == (
        "jena-1.5",
        "+4915112340001",
        "jena",
        False,
    )
    assert entry.ended_at - entry.entered_at == 9


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("/pbx/UUID/x", "+49|jena|1|2"),
        ("/v112-abandoned/jena-1.5", "+49|jena|1|2"),
        ("/v112-abandoned/2026120123/jena 1", "+49|jena|1|2"),
        ("/v112-abandoned/2026120123/jena-1.5", "+49|jena|1"),
        ("/v112-abandoned/2026120123/jena-1.5", "+49|jena|1|inf"),
    ],
)
def test_a_malformed_outbox_entry_is_refused_with_a_reason(key: str, value: str) -> None:
    with pytest.raises(events.DialplanEventError):
        events.outbox_entry(key, value, "jena")


def status_channel(channel: str, uniqueid: str, **fields: Any) -> dict[str, Any]:
    """One channel of the answer to ``Status`` with Variables: MEMBERNAME,MEMBERINTERFACE,QEHOLDTIME.

    Captured from the lab (Asterisk 22, tests/integration/test_card_after_restart.py), trimmed.
    """
    return {"Event": "Status", "Privilege": "Call", "Channel": channel, "ChannelState": "6", "ChannelStateDesc": "Up",
            "CallerIDNum": "+4915112348101", "CallerIDName": "<unknown>", "ConnectedLineNum": "s",
            "Context": "v112-local", "Exten": "s", "Priority": "1", "Uniqueid": uniqueid,
            "Linkedid": "jena-1796180708.0", "Type": "PJSIP", "DNID": "112", "TimeToHangup": "0", "BridgeID": "",
            "Application": "", "Data": "", "Nativeformats": "(alaw)", "Seconds": "5", **fields}  # fmt: skip


CALLER_HELD = status_channel(
    "PJSIP/carrier-00000000", "jena-1796180708.0", BridgeID="029d78b3-a01e-433d-a90a-4e5bec8ec20a",
    Application="Queue", Data="112-jena,r,,,10,,v112-answered,,",
    ChanVariable=["V112_CALL_ID=jena-1796180708.0", "V112_CALLER=+4915112348101", "V112_FROM_SITE=", "V112_MOVED="],
    Variable=["MEMBERNAME=jena-d1", "MEMBERINTERFACE=PJSIP/jena-d1", "QEHOLDTIME=1"],
)  # fmt: skip
# app_queue sets the member variables on the desk's channel too: its application tells it apart
DESK_OF_HELD = status_channel(
    "PJSIP/jena-d1-00000003", "jena-1796180710.3", BridgeID="029d78b3-a01e-433d-a90a-4e5bec8ec20a",
    Application="AppQueue", Data="(Outgoing Line)", Context="from-dispatcher", CallerIDNum="s", DNID="",
    ChanVariable=["V112_CALL_ID=jena-1796180708.0", "V112_CALLER=+4915112348101", "V112_FROM_SITE=", "V112_MOVED="],
    Variable=["MEMBERNAME=jena-d1", "MEMBERINTERFACE=PJSIP/jena-d1", "QEHOLDTIME=1"],
)  # fmt: skip
PARTNER_LEG_HELD = status_channel(
    "PJSIP/intersite-00000008", "jena-1796180720.12", BridgeID="77aa0000-0000-4000-8000-000000000002",
    Application="Queue", Data="112-jena,r,,,30,,,,", Context="from-intersite", Exten="112", CallerIDNum="+4936411234",
    ChanVariable=["V112_CALL_ID=gera-1796180719.3", "V112_CALLER=+4936411234", "V112_FROM_SITE=gera", "V112_MOVED="],
    Variable=["MEMBERNAME=jena-d2", "MEMBERINTERFACE=PJSIP/jena-d2", "QEHOLDTIME=4"],
)  # fmt: skip
STILL_WAITING = status_channel(
    "PJSIP/carrier-00000009", "jena-1796180730.15", Application="Queue", Data="112-jena,r,,,10,,v112-answered,,",
    ChanVariable=["V112_CALL_ID=jena-1796180730.15", "V112_CALLER=+4936419999", "V112_FROM_SITE=", "V112_MOVED="],
    Variable=["MEMBERNAME=", "MEMBERINTERFACE=", "QEHOLDTIME="],
)  # fmt: skip
STATUS_START = {"Response": "Success", "EventList": "start", "Message": "Channel status will follow"}
STATUS_DONE = {"Event": "StatusComplete", "EventList": "Complete", "ListItems": "4", "Items": "4"}


def test_the_calls_dispatchers_hold_are_read_from_the_answer_to_status() -> None:
    answer = [STATUS_START, DESK_OF_HELD, CALLER_HELD, STILL_WAITING, PARTNER_LEG_HELD, STATUS_DONE]
    found = events.answered_calls(answer, "jena")
    assert [(e.call_id, e.uniqueid, e.dispatcher, e.channel, e.from_site) for e in found] == [
        ("jena-1796180708.0", "jena-1796180708.0", "jena-d1", "PJSIP/carrier-00000000", ""),
        ("gera-1796180719.3", "jena-1796180720.12", "jena-d2", "PJSIP/intersite-00000008", "gera"),
    ]
    held = found[0]
    assert (held.queue, held.interface, held.dispatcher_channel) == (
        "112-jena",
        "PJSIP/jena-d1",
        "PJSIP/jena-d1-00000003",
    )
    assert (held.hold_time, held.caller_number, held.answered_at, held.recovered) == (1, "+4915112348101", 0.0, True)


@pytest.mark.parametrize(
    "changes",
    [
        {"BridgeID": ""},  # not (any more) in a bridge with a desk
        {"Application": "Dial"},  # a leg to the partner: the partner's dispatcher holds it
        {"Variable": ["MEMBERNAME=", "MEMBERINTERFACE=", "QEHOLDTIME="]},  # app_queue set no member
        {"Variable": None},  # the variables not in the answer at all
        {"Uniqueid": ""},
    ],
)
def test_a_channel_that_is_no_answered_caller_is_none(changes: dict[str, Any]) -> None:
    channel = {key: value for key, value in {**CALLER_HELD, **changes}.items() if value is not None}
    assert events.answered_calls([channel], "jena") == []


def test_a_malformed_hold_time_in_status_degrades_to_zero() -> None:
    channel = {**CALLER_HELD, "Variable": ["MEMBERNAME=jena-d1", "QEHOLDTIME=soon"]}
    assert events.answered_calls([channel], "jena")[0].hold_time == 0
