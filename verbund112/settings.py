"""The one typed settings object of the verbund112 service.

Precedence, lowest first: defaults here, then the YAML file given with
``--config`` (or VERBUND112_CONFIG), then environment variables
``VERBUND112_<SECTION>__<FIELD>`` (e.g. ``VERBUND112_AMI__SECRET``). Secrets
belong in the environment, not in the file. See docs/configuration.md.
"""

from __future__ import annotations

import os
import zoneinfo
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, StringConstraints, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

SiteName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9-]{0,15}$")]
# read: look; admin: change rules; aml: deliver AML messages (an SMS gateway, an AML endpoint)
# dispatcher: the screen pops of the dispatcher the token is named after
Role = Literal["read", "admin", "aml", "dispatcher"]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AmiSettings(_Section):
    """The Asterisk Manager Interface of this site's Asterisk."""

    host: str = "127.0.0.1"
    port: int = Field(default=5038, ge=1, le=65535)
    username: str = "verbund112"
    secret: SecretStr = SecretStr("")
    connect_timeout: float = Field(default=3.0, gt=0, description="TCP connect and login, seconds")
    action_timeout: float = Field(default=3.0, gt=0, description="answer to one AMI action, seconds")
    ping_interval: float = Field(default=2.0, gt=0, description="watchdog: a Ping this often, seconds")
    ping_timeout: float = Field(default=2.0, gt=0, description="watchdog: no Pong within this: reconnect")
    reconnect_min: float = Field(default=0.2, gt=0, description="first reconnect delay, seconds")
    reconnect_max: float = Field(default=5.0, gt=0, description="reconnect back-off cap, seconds")


class FastAgiSettings(_Section):
    """The FastAGI server Asterisk asks where a 112 call goes."""

    host: str = "127.0.0.1"
    port: int = Field(default=4573, ge=0, le=65535)
    deadline: float = Field(
        default=0.5,
        gt=0,
        description="whole exchange per request, seconds; keep well under the dialplan's agi_deadline_s",
    )
    max_header_bytes: int = Field(default=16384, gt=0)


class RedisSettings(_Section):
    url: str = "redis://127.0.0.1:6379/0"
    timeout: float = Field(default=0.5, gt=0, description="per Redis command, seconds")
    heartbeat_interval: float = Field(default=0.5, gt=0)
    # A site that stops is seen as gone after at most heartbeat_ttl + heartbeat_interval (2 s).
    heartbeat_ttl: float = Field(default=1.5, gt=0, description="partner counts as unknown after this")


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


class AmlSettings(_Section):
    """Advanced Mobile Location intake (ETSI TS 103 625)."""

    # empty: only bearer tokens with the aml role; set: also bodies signed with
    # X-AML-Signature: sha256=<hex HMAC-SHA256 of the body>
    hmac_secret: SecretStr = SecretStr("")
    retention_s: int = Field(default=3600, ge=1, le=3600, description="AML fixes are deleted after this")
    max_body_bytes: int = Field(default=8192, gt=0)


class AmlPullSettings(_Section):
    """Fetching AML from the central server by calling number (HTTPS, client certificate, basic auth).

    While a 112 call that entered here is live and the AML store has no fix of
    this call for its number, the service asks the server with back-off (see
    verbund112/aml_polls.py). Secrets (password, key password) from the environment.
    """

    enabled: bool = False
    # the lookup URL; the number goes into the query parameter `number`
    url: str = ""
    number_format: Literal["e164", "international", "national"] = "e164"
    client_cert: Path | None = None  # PEM: the certificate (and the key, unless client_key is set)
    client_key: Path | None = None
    client_key_password: SecretStr = SecretStr("")
    ca_file: Path | None = None  # PEM CAs that may sign the server's certificate; none: the system's
    username: str = ""
    password: SecretStr = SecretStr("")
    request_timeout: float = Field(default=3.0, gt=0, le=30, description="one request, seconds")
    backoff_first: float = Field(default=2.0, gt=0, description="wait after the first answer without a fix")
    backoff_factor: float = Field(default=1.5, ge=1.0, le=10.0)
    backoff_max: float = Field(default=10.0, gt=0, description="back-off cap, seconds")
    max_duration: float = Field(default=180.0, gt=0, le=3600, description="a call's polling ends after this")
    max_polls: int = Field(default=100, ge=1, le=10000, description="calls polled at once; more are not polled")
    # zone of the server's location_time when it is written as a date and time without offset
    time_zone: str = "Europe/Berlin"

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @model_validator(mode="after")
    def _complete_when_enabled(self) -> AmlPullSettings:
        if not self.enabled:
            return self
        missing = [name for name in ("url", "client_cert", "username") if not getattr(self, name)]
        if not self.password.get_secret_value():
            missing.append("password")
        if missing:
            raise ValueError(f"AML pull enabled, but {', '.join(missing)} not set")
        if ":" in self.username:
            raise ValueError("username may not contain ':' (HTTP basic auth)")
        if not self.url.startswith("https://"):
            raise ValueError("url must be https://")
        if self.backoff_max < self.backoff_first:
            raise ValueError("backoff_max is below backoff_first")
        return self


class LogSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["json", "console"] = "json"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="VERBUND112_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    site: SiteName = "jena"
    partner: SiteName = "gera"
    local_queue: str = Field(default="", description="defaults to 112-<site>")
    rules_file: Path | None = Field(default=None, description="routing rules; default: the shipped rules/")
    ami: AmiSettings = AmiSettings()
    fastagi: FastAgiSettings = FastAgiSettings()
    redis: RedisSettings = RedisSettings()
    web: WebSettings = WebSettings()
    aml: AmlSettings = AmlSettings()
    aml_pull: AmlPullSettings = AmlPullSettings()
    log: LogSettings = LogSettings()

    @property
    def queue(self) -> str:
        return self.local_queue or f"112-{self.site}"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = _config_file.get()
        if config_file is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config_file))
        return tuple(sources)


class _ConfigFile:
    """The YAML file the next load_settings() reads (pydantic-settings wants it at class level)."""

    path: Path | None = None

    def get(self) -> Path | None:
        return self.path


_config_file = _ConfigFile()


def load_settings(config_file: Path | str | None = None, **overrides: object) -> Settings:
    """Defaults < file < environment < overrides (the last for tests)."""
    path = config_file or os.environ.get("VERBUND112_CONFIG")
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"configuration file {path} does not exist")
    _config_file.path = path
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    finally:
        _config_file.path = None
