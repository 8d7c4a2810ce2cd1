"""The settings sections the HTTP edge owns: `web` (listener, tokens) and `aml` (the AML intake)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, StringConstraints

# read: look; admin: change rules; aml: deliver AML messages (an SMS gateway, an AML endpoint)
# dispatcher: the screen pops of the dispatcher the token is named after
Role = Literal["read", "admin", "aml", "dispatcher"]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TokenGrant(_Section):
    """What a bearer token may do, and whose it is (the audit trail names it)."""

    role: Role
    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._@-]{1,64}$")]


class WebSettings(_Section):
    """HTTP API (and later the dispatcher pages). Every request needs a token."""

    host: str = "127.0.0.1"
    port: int = Field(default=8112, ge=0, le=65535)
    # token -> grant; VERBUND112_WEB__TOKENS='{"<token>": {"role": "admin", "name": "alice"}}'
    tokens: dict[SecretStr, TokenGrant] = {}


class AmlIntakeSettings(_Section):
    """Advanced Mobile Location intake (ETSI TS 103 625)."""

    # empty: only bearer tokens with the aml role; set: also bodies signed with
    # X-AML-Signature: sha256=<hex HMAC-SHA256 of the body>
    hmac_secret: SecretStr = SecretStr("")
    retention_s: int = Field(default=3600, ge=1, le=3600, description="AML fixes are deleted after this")
    max_body_bytes: int = Field(default=8192, gt=0)
