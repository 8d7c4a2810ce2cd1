"""The settings sections the HTTP edge owns: `web` (listener, tokens, limits) and `aml` (the AML intake)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, StringConstraints

# read: look (a wall display, Prometheus), nothing personal; admin: look and change the rules;
# supervisor: look, and the callback list with caller numbers, and act on it;
# dispatcher: the page, screen pops and callback list of the seat the token is named after;
# aml: deliver AML messages (an SMS gateway, an AML endpoint)
Role = Literal["read", "admin", "supervisor", "dispatcher", "aml"]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TokenGrant(_Section):
    """What a bearer token may do, and whose it is (the audit trail names it)."""

    role: Role
    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._@-]{1,64}$")]


class WebSettings(_Section):
    """HTTP API, pages and the dispatchers' screens. Every request needs a token."""

    host: str = "127.0.0.1"
    port: int = Field(default=8112, ge=0, le=65535)
    # token -> grant; VERBUND112_WEB__TOKENS='{"<token>": {"role": "admin", "name": "alice"}}'
    tokens: dict[SecretStr, TokenGrant] = {}
    access_log: bool = True
    # The web server shares the process with FastAGI: these keep a flood or a slow client from starving it.
    max_connections: int = Field(default=256, ge=1, le=10_000)
    request_head_timeout_s: float = Field(default=10.0, gt=0, le=300)
    request_body_timeout_s: float = Field(default=10.0, gt=0, le=300)
    max_screens_per_dispatcher: int = Field(default=4, ge=1, le=100)
    screen_auth_timeout_s: float = Field(default=5.0, gt=0, le=60)


class AmlIntakeSettings(_Section):
    """Advanced Mobile Location intake (ETSI TS 103 625)."""

    # empty: only bearer tokens with the aml role; set: also signed deliveries (web.auth.SIGNED_HEADERS)
    hmac_secret: SecretStr = SecretStr("")
    # a signed delivery's timestamp may be this far off the service's clock; its nonce is kept twice as long
    signature_window_s: int = Field(default=300, ge=10, le=3600)
    retention_s: int = Field(default=3600, ge=1, le=3600, description="AML fixes are deleted after this")
    max_body_bytes: int = Field(default=8192, gt=0)
