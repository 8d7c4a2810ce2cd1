"""Rules files: valid ones load, broken ones are refused with file, line and field."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from routing.rules import RulesError, load_rules

RULES_DIR = Path(__file__).resolve().parents[2] / "rules"


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    for path in RULES_DIR.iterdir():
        shutil.copy(path, tmp_path / path.name)
    return tmp_path


def edit(rules_dir: Path, old: str, new: str, name: str = "verbund112.yaml") -> Path:
    path = rules_dir / name
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    return rules_dir / "verbund112.yaml"


def test_the_shipped_rules_load(rules_dir: Path) -> None:
    rules = load_rules(rules_dir / "verbund112.yaml")
    assert rules.centre_of("16053") == "jena"
    assert rules.centre_of("16076") == "gera"
    assert rules.area_codes["0365"] == "16052"
    assert len(rules.digest) == 64


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('"16076": gera', '"16076": nowhere', "areas.districts.16076: unknown centre 'nowhere'"),
        ('"16076": gera', '"16076x": gera', "areas.districts.16076x"),
        ("certain_share: 0.9", "certain_share: 2", "areas.certain_share"),
        ("aml_max_age_s: 600", "aml_max_age_s: 7200", "aml_max_age_s"),
        (
            "source_priority: [pidf, aml, cell, area_code, trunk]",
            "source_priority: [pidf, gps, trunk]",
            "source_priority.1",
        ),
        ("source_priority: [pidf, aml, cell, area_code, trunk]", "source_priority: [pidf]", "trunk"),
        ("  jena: {queue: 112-jena}", '  jena: {queue: "112 jena"}', "sites.jena.queue"),
        ("version: 1", "version: 2", "version"),
        (
            "    gera: {enabled: true,",
            "    erfurt: {enabled: true,",
            "overflow.sites.erfurt: not a site",
        ),
        (
            "wait_threshold_s: 10, all_busy_after_s: 3}   # Jena",
            "wait_threshold_s: 2, all_busy_after_s: 3}   # Jena",
            "overflow.sites.jena: Value error, all_busy_after_s must not be longer",
        ),
        ("confirm_within_s: 10", "confirm_within_s: 0", "overflow.confirm_within_s"),
        ("decision_deadline_ms: 150", "decision_deadline_ms: 150\nsurprise: 1", "surprise"),
        (
            'ils-suhl:          {name: "ZLS Suhl (Hildburghausen, Sonneberg)"}',
            'ils-suhl:          {name: "ZLS Suhl", number: "03681 123"}',
            "E.164",
        ),
    ],
)
def test_errors_name_file_line_and_field(rules_dir: Path, old: str, new: str, expected: str) -> None:
    path = edit(rules_dir, old, new)
    with pytest.raises(RulesError) as caught:
        load_rules(path)
    text = str(caught.value)
    assert str(path) in text
    assert expected in text


def test_the_line_number_points_at_the_field(rules_dir: Path) -> None:
    path = edit(rules_dir, "aml_max_age_s: 600", "aml_max_age_s: -5")
    line = next(n for n, text in enumerate(path.read_text().splitlines(), 1) if text.startswith("aml_max_age_s"))
    with pytest.raises(RulesError, match=rf"verbund112.yaml:{line}: aml_max_age_s:"):
        load_rules(path)


@pytest.mark.parametrize(
    ("name", "old", "new", "expected"),
    [
        ("area_codes.yaml", '"0365": "16052"', '"0365": "99999"', "99999"),
        ("area_codes.yaml", '"0365": "16052"', '"365": "16052"', "area_codes.365"),
        ("districts.geojson", '"AGS": "16076"', '"AGS": "16052"', "appears twice"),
    ],
)
def test_broken_data_files_are_refused(rules_dir: Path, name: str, old: str, new: str, expected: str) -> None:
    path = edit(rules_dir, old, new, name)
    with pytest.raises(RulesError, match=expected):
        load_rules(path)


@pytest.mark.parametrize("content", ["", "- a list", "sites: [", "\x00\x01", "areas: !!python/object:os.system {}"])
def test_not_a_rules_file(tmp_path: Path, content: str) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(content)
    with pytest.raises(RulesError, match=str(path)):
        load_rules(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match="cannot read"):
        load_rules(tmp_path / "none.yaml")
