"""`verbund112 rules check / simulate / diff`, as a telecom admin uses them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from verbund112.cli import main

RULES_DIR = Path(__file__).resolve().parents[2] / "rules"


@pytest.fixture
def copy(tmp_path: Path):
    def make(name: str, **replacements: str) -> Path:
        target = tmp_path / name
        shutil.copytree(RULES_DIR, target)
        for file_and_old, new in replacements.items():
            file_name, old = file_and_old.split("|", 1)
            path = target / file_name
            text = path.read_text()
            assert old in text
            path.write_text(text.replace(old, new))
        return target / "verbund112.yaml"

    return make


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def test_check_accepts_the_shipped_rules() -> None:
    code, output = run("rules", "check", str(RULES_DIR / "verbund112.yaml"))
    assert code == 0
    assert "valid" in output
    assert "area codes: 51" in output
    assert "overflow from jena: after 10 s, or 3 s with every desk busy" in output


def test_check_shows_a_direction_switched_off(copy) -> None:
    edited = copy("off", **{"verbund112.yaml|gera: {enabled: true,": "gera: {enabled: false,"})
    code, output = run("rules", "check", str(edited))
    assert code == 0
    assert "overflow from gera: off" in output


def test_check_refuses_with_file_line_and_field(copy) -> None:
    broken = copy("broken", **{'verbund112.yaml|"16053": jena ': '"16053": mars '})
    code, output = run("rules", "check", str(broken))
    assert code == 1
    line = next(n for n, t in enumerate(broken.read_text().splitlines(), 1) if '"16053": mars' in t)
    assert f"{broken}:{line}: areas.districts.16053: unknown centre 'mars'" in output


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--number", "0365123456", "--site", "jena"], "route: partner (handed over to ZLS gera"),
        (["--number", "036411234567", "--site", "jena"], "route: local (answered here, queue 112-jena)"),
        (["--number", "0365123456", "--site", "jena", "--partner-down"], "flag: partner-unavailable"),
        (
            ["--number", "+4915112345678", "--site", "jena", "--lat", "50.6547", "--lon", "12.1997", "--radius", "30"],
            "lies in Greiz",
        ),
        (["--number", "+4915112345678", "--site", "gera", "--lat", "91", "--lon", "12"], "note: PIDF-LO ignored"),
        (["--number", "garbage", "--site", "gera"], "note: caller number unusable"),
    ],
)
def test_simulate_explains_the_decision(args: list[str], expected: str) -> None:
    code, output = run("rules", "simulate", *args)
    assert code == 0, output
    assert expected in output


def test_simulate_json() -> None:
    code, output = run("rules", "simulate", "--number", "0365123456", "--site", "jena", "--json")
    assert code == 0
    decision = json.loads(output)
    assert decision["route"] == "partner"
    assert decision["location"]["ags"] == "16052"


def test_simulate_with_an_unknown_site_is_a_usage_error() -> None:
    code, output = run("rules", "simulate", "--number", "0365123456", "--site", "erfurt")
    assert code == 2
    assert "--site must be one of jena, gera" in output


def test_diff_names_what_routes_differently(copy) -> None:
    old = copy("old")
    new = copy(
        "new",
        **{'verbund112.yaml|"16076": gera': '"16076": jena', 'area_codes.yaml|"0365": "16052"': '"0365": "16053"'},
    )
    code, output = run("rules", "diff", str(old), str(new))
    assert code == 0
    assert "district Greiz (16076): ZLS gera → ZLS jena" in output
    assert "Ortsnetz 0365: Gera (ZLS gera) → Jena (ZLS jena)" in output


def test_diff_of_identical_rules(copy) -> None:
    code, output = run("rules", "diff", str(copy("a")), str(copy("b")))
    assert code == 0
    assert output.strip() == "no call would route differently"


def test_diff_notices_moved_borders(copy) -> None:
    old = copy("old")
    districts = json.loads((old.parent / "districts.geojson").read_text())
    jena = next(f for f in districts["features"] if f["properties"]["AGS"] == "16053")
    jena["geometry"]["coordinates"] = [[[[11.0, 50.0], [12.5, 50.0], [12.5, 51.2], [11.0, 51.2], [11.0, 50.0]]]]
    new = copy("new")
    (new.parent / "districts.geojson").write_text(json.dumps(districts))
    code, output = run("rules", "diff", str(old), str(new))
    assert code == 0
    assert "district borders:" in output
