"""What the HTTP edge needs of the service, as Protocols; the composition root hands in the real things.

The web layer never imports the composition root or a feature's module: it is
given a WebPorts (the app key PORTS) and the settings sections it owns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import prometheus_client as prom
from aiohttp import web

from routing.rules import Rules
from verbund112.store.records import AmlFixRecord
from web.settings import AmlIntakeSettings, TokenGrant, WebSettings


class RulesChange(Protocol):
    @property
    def old_digest(self) -> str | None: ...
    @property
    def new_digest(self) -> str: ...
    @property
    def changes(self) -> list[str]: ...
    @property
    def applied(self) -> bool: ...


class RulesAdmin(Protocol):
    @property
    def rules(self) -> Rules | None: ...
    @property
    def last_error(self) -> str | None: ...
    async def change(self, who: str, text: str | None = None, dry_run: bool = False) -> RulesChange:
        """Raises routing.rules.RulesError when the new rules are refused."""
        ...

    async def audit_trail(self) -> list[dict[str, Any]]:
        """Raises verbund112.store.StoreError when the store does not answer."""
        ...


class CallCards(Protocol):
    """The screen pops: a dispatcher's current card and the callback list."""

    def card_of(self, dispatcher: str) -> dict[str, Any] | None: ...
    async def abandoned_message(self) -> dict[str, Any]: ...
    async def callback_done(self, call_id: str) -> bool: ...


class AmlSink(Protocol):
    async def add_aml_fix(self, e164: str, record: AmlFixRecord, ttl_s: int) -> None:
        """Raises verbund112.store.StoreError when the store does not take it."""
        ...

    async def claim_aml_nonce(self, nonce: str, ttl_s: int) -> bool:
        """False if the nonce was claimed before (within ttl_s). Raises verbund112.store.StoreError."""
        ...


class Supervision(Protocol):
    async def view(self, now: float) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Health:
    """The parts the service needs to take calls; True while up. Nothing personal."""

    ami: bool  # logged in to the site's Asterisk: calls are followed (cards, overflow, callbacks)
    fastagi: bool  # the routing port listens
    rules: bool  # routing rules loaded
    store: bool  # Redis answers: the Verbund's shared data (partner's records, AML, callback list)


@dataclass(frozen=True)
class WebPorts:
    site: str
    web: WebSettings
    aml: AmlIntakeSettings
    status: Callable[[], dict[str, Any]]
    health: Callable[[], Health]
    registry: prom.CollectorRegistry
    rules: RulesAdmin
    cards: CallCards
    aml_sink: AmlSink
    supervision: Supervision
    aml_messages: prom.Counter  # by format and outcome
    aml_signatures_refused: prom.Counter  # by reason


PORTS: web.AppKey[WebPorts] = web.AppKey("ports", WebPorts)
GRANT = web.RequestKey("grant", TokenGrant)
