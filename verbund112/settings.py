"""The one typed settings object of the verbund112 service, composed of the sections the packages own.

Precedence, lowest first: defaults, then the YAML file given with
``--config`` (or VERBUND112_CONFIG), then environment variables
``VERBUND112_<SECTION>__<FIELD>`` (e.g. ``VERBUND112_AMI__SECRET``). Secrets
belong in the environment, not in the file. See docs/configuration.md.

Sections: ``ami`` (telephony.ami), ``fastagi`` (telephony.fastagi), ``redis``
(verbund112.store), ``web`` and ``aml`` (web.settings), ``aml_pull``
(aml.pull), ``log`` (verbund112.logs), ``circling``
(verbund112.features.circling_callers).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

from pydantic import Field, StringConstraints
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from aml.pull import AmlPullSettings
from telephony.ami import AmiSettings
from telephony.fastagi import FastAgiSettings
from verbund112.features.circling_callers import CirclingSettings
from verbund112.logs import LogSettings
from verbund112.store import RedisSettings
from web.settings import AmlIntakeSettings, WebSettings

SiteName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9-]{0,15}$")]


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
    aml: AmlIntakeSettings = AmlIntakeSettings()
    aml_pull: AmlPullSettings = AmlPullSettings()
    log: LogSettings = LogSettings()
    circling: CirclingSettings = CirclingSettings()

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
