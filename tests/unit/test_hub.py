"""The event hub: every subscriber gets the events published after it subscribed, in order; of its kinds only."""

from __future__ import annotations

from telephony import events
from verbund112.features.hub import EventHub

HANGUP = events.ChannelHungUp("jena", "c1", "u1", "u1", "PJSIP/carrier-1", 16)
STATE = events.DispatcherStateChanged("jena", "112-jena", "desk-1", "PJSIP/desk-1", events.MemberStatus.INUSE,
                                      paused=False, in_call=True)  # fmt: skip
ANSWERED = events.CallAnswered("jena", "c1", "u1", "u1")


async def test_a_subscriber_of_some_kinds_gets_those_in_order_and_one_of_all_kinds_gets_all() -> None:
    hub = EventHub()
    with hub.subscribe() as everything, hub.subscribe(kinds=(events.ChannelHungUp, events.CallAnswered)) as some:
        for event in (STATE, HANGUP, STATE, ANSWERED, HANGUP):
            hub.publish(event)
        assert [everything.get_nowait() for _ in range(everything.qsize())] == [STATE, HANGUP, STATE, ANSWERED, HANGUP]
        assert [some.get_nowait() for _ in range(some.qsize())] == [HANGUP, ANSWERED, HANGUP]
    hub.publish(HANGUP)  # nobody subscribed any more
    assert everything.empty() and some.empty()


async def test_a_full_subscriber_loses_its_oldest_event_never_the_producers_time() -> None:
    hub = EventHub()
    with hub.subscribe(maxsize=2, kinds=(events.ChannelHungUp,)) as queue:
        for uniqueid in ("u1", "u2", "u3"):
            hub.publish(events.ChannelHungUp("jena", uniqueid, uniqueid, uniqueid, "PJSIP/carrier-1", 16))
            hub.publish(STATE)  # not of its kinds: neither queued nor counted
        assert [queue.get_nowait().uniqueid for _ in range(2)] == ["u2", "u3"]
        assert hub.dropped == 1
