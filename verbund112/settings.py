"""The one typed settings object of the verbund112 service, composed of the sections the packages own.

Precedence, lowest first: defaults, then the YAML file given with
``--config`` (or VERBUND112_CONFIG), then files in the folder VERBUND112_SECRETS_DIR
names (one value per file, named like the variable: ``verbund112_ami__secret``; the
mounted secrets of a container), then environment variables
``VERBUND112_<SECTION>__<FIELD>`` (e.g. ``VERBUND112_AMI__SECRET``). Secrets
belong in the environment or the secrets folder, not in the file. See docs/configuration.md.

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
    NestedSecretsSettingsSource,
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
        if _sources.secrets_dir is not None:
            # named like the variables, nested by "__": what `podman secret`/compose mount in /run/secrets
            sources.append(
                NestedSecretsSettingsSource(file_secret_settings, secrets_dir=_sources.secrets_dir,
                                            secrets_dir_missing="error")
            )  # fmt: skip
        if _sources.config_file is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=_sources.config_file))
        return tuple(sources)


class _Sources:
    """The YAML file and secrets folder the next load_settings() reads (pydantic-settings wants them
    at class level)."""

    config_file: Path | None = None
    secrets_dir: Path | None = None


_sources = _Sources()


def load_settings(config_file: Path | str | None = None, **overrides: object) -> Settings:
    """Defaults < file < secrets folder < environment < overrides (the last for tests)."""
    path = config_file or os.environ.get("VERBUND112_CONFIG")
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"configuration file {path} does not exist")
    secrets_dir = os.environ.get("VERBUND112_SECRETS_DIR")
    if secrets_dir and not Path(secrets_dir).is_dir():
        raise FileNotFoundError(f"secrets folder {secrets_dir} (VERBUND112_SECRETS_DIR) does not exist")
    _sources.config_file = path
    _sources.secrets_dir = Path(secrets_dir) if secrets_dir else None
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    finally:
        _sources.config_file = _sources.secrets_dir = None
