"""Abandoned calls: every 112 caller who hung up before a dispatcher answered reaches the callback list.

The dialplan reports the end of every call that entered this site, whoever
routed it (the service, the FastAGI fallback, the kill switch): the hangup
handler raises V112CallEnded over AMI and writes each unanswered call to
Asterisk's own database (the AstDB outbox). This feature puts the unanswered
ones on the Verbund's callback list through an outbox that retries while Redis
does not answer, and after every AMI (re)connect it collects the AstDB outbox
(what ended while the service was down or AMI was cut). The store's write is
idempotent per call id: a call reported twice is listed once, and never again
after its callback was done.
"""

from __future__ import annotations

import logging
from typing import Protocol

import prometheus_client as prom

from telephony import events
from telephony.ami import AmiError
from verbund112.features.screen_pops import e164_or_none
from verbund112.features.supervise import Outbox
from verbund112.store import NotReplicated
from verbund112.store.records import AbandonedCall

log = logging.getLogger(__name__)


class AbandonedStore(Protocol):
    async def add_abandoned_once(self, entry: AbandonedCall) -> str: ...


class OutboxReader(Protocol):
    """The AMI client's read of the dialplan's AstDB outbox (telephony.ami.AmiClient)."""

    async def abandoned_outbox(self) -> list[events.CallEnded | events.BadDialplanEvent]: ...


class AbandonedCalls:
    def __init__(self, *, store: AbandonedStore, dropped: prom.Counter, registry: prom.CollectorRegistry) -> None:
        self._store = store
        self.outbox: Outbox[AbandonedCall] = Outbox("abandoned call", self._write, dropped)
        self.outcomes = prom.Counter(
            "verbund112_abandoned_calls", "abandoned calls reported by the dialplan, by what the store did",
            ["outcome"], registry=registry,
        )  # fmt: skip
        self.bad_reports = prom.Counter(
            "verbund112_dialplan_reports_bad", "V112 UserEvents and AstDB outbox entries that did not parse, skipped",
            ["name"], registry=registry,
        )  # fmt: skip
        self.outbox_reads = prom.Counter(
            "verbund112_abandoned_outbox_reads", "reads of the AstDB outbox after an AMI connect", ["outcome"],
            registry=registry,
        )  # fmt: skip

    def on_event(self, event: events.SiteEvent) -> None:
        """From the AMI reader: never waits (the store write goes through the outbox)."""
        if isinstance(event, events.CallEnded):
            self._ended(event)
        elif isinstance(event, events.BadDialplanEvent):
            self._bad(event)

    async def collect_outbox(self, ami: OutboxReader) -> None:
        """After an AMI connect: every unanswered call in the AstDB outbox (the store lists each once)."""
        try:
            entries = await ami.abandoned_outbox()
        except AmiError as exc:
            self.outbox_reads.labels("failed").inc()
            log.warning("abandoned-call outbox in AstDB not read (%s); it is read again at the next connect", exc)
            return
        self.outbox_reads.labels("read").inc()
        for entry in entries:
            self.on_event(entry)
        log.info("abandoned-call outbox in AstDB read: %d entries", len(entries))

    def _ended(self, event: events.CallEnded) -> None:
        if event.answered:
            return
        self.outbox.put(
            AbandonedCall(
                call_id=event.call_id, caller=e164_or_none(event.caller_number) or event.caller_number,
                site=event.entry_site, at=event.ended_at, waited_s=max(0.0, event.ended_at - event.entered_at),
            )
        )  # fmt: skip

    def _bad(self, event: events.BadDialplanEvent) -> None:
        self.bad_reports.labels(event.name).inc()
        log.warning("dialplan report %s skipped: %s", event.name, event.problem)

    async def _write(self, entry: AbandonedCall) -> None:
        try:
            outcome = await self._store.add_abandoned_once(entry)
        except NotReplicated as exc:  # written; the outbox repeats it until a replica has it ("seen" then)
            self._counted(entry, str(exc.result))
            raise
        self._counted(entry, outcome)

    def _counted(self, entry: AbandonedCall, outcome: str) -> None:
        self.outcomes.labels(outcome).inc()
        if outcome == "added":
            log.info("call %s abandoned before an answer: on the callback list", entry.call_id)
        else:
            log.debug("call %s not listed again: %s", entry.call_id, outcome)
