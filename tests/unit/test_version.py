"""What is installed: `verbund112 --version` and the build-info metric say the package's version."""

from __future__ import annotations

from importlib.metadata import version

import prometheus_client as prom
from click.testing import CliRunner

from tests.unit.test_fastagi import service_settings
from verbund112.cli import main
from verbund112.service import Service


def test_the_version_option_prints_the_installed_package_version() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output == f"verbund112 {version('verbund112')}\n"


def test_the_service_exports_its_version_as_build_info() -> None:
    service = Service(service_settings())
    exported = prom.generate_latest(service.registry).decode()
    assert f'verbund112_build_info{{version="{version("verbund112")}"}} 1.0' in exported
