"""Where the files that ship with verbund112 are: the routing rules and the Asterisk configuration.

In the repository they are the top-level folders ``rules/`` and ``asterisk-config/``. pyproject.toml
maps them into this package (``package-dir``) as ``verbund112.shipped.rules`` and
``verbund112.shipped.asterisk_config``, so a wheel carries them and an editable install finds them
where they are; either way importlib.resources finds them. They are defaults only: the service's
``rules_file`` setting and the options of ``verbund112 rules`` and ``verbund112 asterisk-config
render`` take files from any folder.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

RULES_PACKAGE = "verbund112.shipped.rules"
ASTERISK_CONFIG_PACKAGE = "verbund112.shipped.asterisk_config"


def _folder(package: str) -> Path:
    found = files(package)
    # The rules name their data files relative to themselves and Jinja reads a folder of templates:
    # both need real files (a wheel installed into site-packages, or the checkout), not a zip.
    if not isinstance(found, Path):
        raise RuntimeError(f"{package} is not installed as files on disk ({found!r})")
    return found


def rules_dir() -> Path:
    """The shipped rules folder (``rules/`` in the repository)."""
    return _folder(RULES_PACKAGE)


def rules_file() -> Path:
    """The shipped routing rules, ``rules/verbund112.yaml`` in the repository."""
    return rules_dir() / "verbund112.yaml"


def asterisk_templates() -> Path:
    """The folder of the shipped Asterisk templates (``asterisk-config/templates``)."""
    return _folder(ASTERISK_CONFIG_PACKAGE) / "templates"


def site_values(name: str) -> Path:
    """The shipped site values of one site (``asterisk-config/sites/<name>.yaml``)."""
    return _folder(ASTERISK_CONFIG_PACKAGE) / "sites" / f"{name}.yaml"
