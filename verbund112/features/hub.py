"""The service's internal events: AMI events plus CallRouted, fanned out without blocking the producer."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

from routing.decision import Decision
from routing.location import Position
from telephony import events
from verbund112.store.records import CallRecord


@dataclass(frozen=True, slots=True)
class CallRouted:
    """The service answered Asterisk's routing question for a call."""

    site: str
    call_id: str
    uniqueid: str
    caller_number: str
    position: Position | None  # the PIDF-LO position of the INVITE, if any
    location_problem: str
    decision: Decision
    record: CallRecord | None  # what is stored for the site that answers the call (None: could not be kept)


ServiceEvent = events.SiteEvent | CallRouted


class EventHub:
    """Fans service events out to subscribers without ever blocking the producer.

    A subscriber may name the kinds it reads: it is woken for those only (a call brings
    ~15 events; a feature that reads four of them need not wake for the rest).
    """

    def __init__(self) -> None:
        self._subscribers: dict[asyncio.Queue[ServiceEvent], tuple[type, ...]] = {}
        self.dropped = 0

    def publish(self, event: ServiceEvent) -> None:
        for queue, kinds in self._subscribers.items():
            if kinds and not isinstance(event, kinds):
                continue
            if queue.full():
                # A slow subscriber loses its oldest event, never the AMI reader's time.
                queue.get_nowait()
                self.dropped += 1
            queue.put_nowait(event)

    @contextlib.contextmanager
    def subscribe(self, maxsize: int = 10000, *, kinds: tuple[type, ...] = ()) -> Iterator[asyncio.Queue[ServiceEvent]]:
        """A queue of the events published from now on (of ``kinds`` only, if given), in order."""
        queue: asyncio.Queue[ServiceEvent] = asyncio.Queue(maxsize)
        self._subscribers[queue] = kinds
        try:
            yield queue
        finally:
            self._subscribers.pop(queue, None)
