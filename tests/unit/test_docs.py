"""The configuration reference lists every setting and every site value."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from routing.rules import RulesFile
from verbund112.asterisk_config import SiteValues
from verbund112.settings import Settings

REFERENCE = (Path(__file__).resolve().parents[2] / "docs/configuration.md").read_text()


def _names(model: type[BaseModel], prefix: str = "") -> list[str]:
    names = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel) and prefix == "" and name != "paths":
            names += _names(annotation, f"{name}.")
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
