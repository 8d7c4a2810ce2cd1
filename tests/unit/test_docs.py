"""The configuration reference lists every setting and every site value."""

from __future__ import annotations

import types
import typing
from pathlib import Path

from pydantic import BaseModel

from routing.rules import RulesFile
from verbund112.asterisk_config import SiteValues
from verbund112.settings import Settings

REFERENCE = (Path(__file__).resolve().parents[2] / "docs/configuration.md").read_text()


def _section(annotation: object) -> type[BaseModel] | None:
    """The settings model of a section, also of an optional one (``X | None``)."""
    optional = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    for candidate in (annotation, *(typing.get_args(annotation) if optional else ())):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _names(model: type[BaseModel], prefix: str = "") -> list[str]:
    names = []
    for name, field in model.model_fields.items():
        section = _section(field.annotation)
        if section is not None and name != "paths":
            if prefix:  # a section within a section (redis.tls): the section itself is documented too
                names.append(prefix + name)
            names += _names(section, f"{prefix}{name}.")
        else:
            names.append(prefix + name)
    return names


def test_every_service_setting_is_documented() -> None:
    missing = [name for name in _names(Settings) if f"| `{name}` |" not in REFERENCE]
    assert missing == []


def test_every_site_value_is_documented() -> None:
    missing = [name for name in SiteValues.model_fields if f"| `{name}` |" not in REFERENCE]
    assert missing == []


def test_every_rules_key_is_documented() -> None:
    missing = [name for name in RulesFile.model_fields if f"| `{name}` |" not in REFERENCE]
    assert missing == []
