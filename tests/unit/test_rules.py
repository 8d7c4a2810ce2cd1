"""Rules files: valid ones load, broken ones are refused with file, line and field."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

import routing.rules as rules_module
from routing.rules import RulesError, load_rules
from tests.support.hostile_input import ALIAS_BOMB

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
    assert len(rules.municipalities) == 253
    assert rules.municipalities_named("Ronneburg") == ["16076061"]
    assert rules.municipalities_named("berga (elster)") == rules.municipalities_named("Berga/Elster") != []
    assert len(rules.municipalities_named("Lehesten")) == 2  # one in Saalfeld-Rudolstadt, one in the Holzland


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('"16076061": "Ronneburg"', '"1607606": "Ronneburg"', "municipalities.1607606"),
        ('"16076061": "Ronneburg"', '"16076061": ""', "municipalities.16076061"),
        ('"16076061": "Ronneburg"', '"19999061": "Ronneburg"', "19999061 (Ronneburg) lies in district 19999"),
    ],
)
def test_a_broken_municipality_table_is_refused_with_the_entry(
    rules_dir: Path, old: str, new: str, expected: str
) -> None:
    edit(rules_dir, old, new, "municipalities.yaml")
    with pytest.raises(RulesError, match=re.escape(expected)):
        load_rules(rules_dir / "verbund112.yaml")


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('"16076": gera', '"16076": nowhere', "areas.districts.16076: unknown centre 'nowhere'"),
        ('"16076": gera', '"16076x": gera', "areas.districts.16076x"),
        ("certain_share: 0.9", "certain_share: 2", "areas.certain_share"),
        ("aml_max_age_s: 600", "aml_max_age_s: 7200", "aml_max_age_s"),
        (
            "source_priority: [pidf, aml, civic, cell, area_code, trunk]",
            "source_priority: [pidf, gps, trunk]",
            "source_priority.1",
        ),
        ("source_priority: [pidf, aml, civic, cell, area_code, trunk]", "source_priority: [pidf]", "trunk"),
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


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (ALIAS_BOMB, "anchors and aliases"),
        ("version: 1\nsites: &s {jena: {queue: q}}\n", "anchors and aliases"),
        ("version: 1\nx: " + "[" * 40 + "]" * 40 + "\n", "nested deeper than"),
    ],
)
def test_yaml_that_would_expand_or_recurse_is_refused_where_it_starts(
    tmp_path: Path, content: str, expected: str
) -> None:
    path = tmp_path / "verbund112.yaml"
    path.write_text(content)
    with pytest.raises(RulesError, match=f"{path}:[23]: not valid YAML: {expected}"):
        load_rules(path)


def test_yaml_with_more_nodes_than_the_cap_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rules_module, "MAX_YAML_NODES", 50)
    path = tmp_path / "verbund112.yaml"
    path.write_text("version: 1\nx: [" + ", ".join(["1"] * 60) + "]\n")
    with pytest.raises(RulesError, match="more than 50 values"):
        load_rules(path)


@pytest.mark.parametrize("target", ["/dev/zero", "../outside.yaml", "/etc/passwd"])
def test_data_files_outside_the_rules_folder_are_refused(rules_dir: Path, target: str) -> None:
    (rules_dir.parent / "outside.yaml").write_text('area_codes: {"0365": "16052"}\n')
    path = edit(rules_dir, "area_codes: area_codes.yaml", f"area_codes: {target}")
    with pytest.raises(RulesError, match="outside the rules folder"):
        load_rules(path)


def test_a_symlink_out_of_the_rules_folder_is_refused(rules_dir: Path) -> None:
    (rules_dir / "cells.yaml").symlink_to("/dev/zero")
    path = edit(rules_dir, "cells: {}", "cells: cells.yaml")
    with pytest.raises(RulesError, match="outside the rules folder"):
        load_rules(path)


def test_data_files_must_be_regular_files(rules_dir: Path) -> None:
    os.mkfifo(rules_dir / "cells.yaml")  # opening a pipe would block until someone writes
    path = edit(rules_dir, "cells: {}", "cells: cells.yaml")
    with pytest.raises(RulesError, match=r"cells\.yaml: not a regular file"):
        load_rules(path)


def test_data_files_have_a_size_limit(rules_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rules_module, "MAX_DATA_FILE_BYTES", 1024 * 1024)
    with (rules_dir / "cells.yaml").open("wb") as cells:
        cells.truncate(1024 * 1024 + 1)  # sparse: costs no disk
    path = edit(rules_dir, "cells: {}", "cells: cells.yaml")
    with pytest.raises(RulesError, match=r"cells\.yaml: larger than 1 MB"):
        load_rules(path)
