"""Whose call a dispatcher answered: the answering channel's own, checked call id (pure, no I/O).

A call that entered here carries the Verbund call id our own dialplan gave it:
the entry channel's Uniqueid, so the two must agree. A leg the partner handed
over the inter-site trunk only *claims* its call id (X-Verbund-Call-Id): the
claim holds when the store has the call's record, the call entered at the
partner, and the caller number is the one the partner recorded. Only a call id
that holds gets the call's card and is marked answered; anything else would
show one caller's data on another's call, or take a real caller off the
callback list.
"""

from __future__ import annotations

import enum

from routing.numbers import NumberError, to_e164
from telephony import dialplan
from verbund112.store.records import CallRecord


class Refusal(enum.StrEnum):
    """Why a call id was not taken (the reason label of verbund112_intersite_claims_refused_total)."""

    NOT_OWN = "not-own"  # a local call whose call id is not its own channel's
    UNKNOWN_CALL = "unknown-call"  # no record of the claimed call in the store
    ENTRY_SITE = "entry-site"  # the claimed call did not enter at the partner
    CALLER = "caller"  # the leg's caller number is not the claimed call's


def is_partner_leg(channel: str) -> bool:
    """Did the caller come over the inter-site trunk (a claim), or enter here (our own id)?"""
    return channel.startswith(dialplan.INTERSITE_CHANNEL_PREFIX)


def local_call_problem(call_id: str, uniqueid: str) -> Refusal | None:
    """A call that entered here: its call id is the entry channel's Uniqueid, set by our dialplan."""
    return None if call_id == uniqueid else Refusal.NOT_OWN


def claim_problem(record: CallRecord | None, *, partner: str, caller: str) -> Refusal | None:
    """A partner's leg: does the store's record of the claimed call bear the claim out?"""
    if record is None:
        return Refusal.UNKNOWN_CALL
    if record.entry_site != partner:
        return Refusal.ENTRY_SITE
    if _number(record.caller) != _number(caller):
        return Refusal.CALLER
    return None


def _number(number: str) -> str:
    try:
        return to_e164(number)
    except NumberError:
        return number
