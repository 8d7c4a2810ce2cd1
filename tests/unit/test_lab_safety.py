"""`lab purge` deletes lab folders and nothing else (an empty setting once pointed it at the repository)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab import lab
from lab.processes import LabError


def test_an_empty_lab_dir_setting_means_the_default_not_the_current_directory(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VERBUND112_LAB_DIR", "")
    assert lab.lab_dir() == (lab.REPO / ".lab").resolve()
    monkeypatch.setenv("VERBUND112_LAB_DIR", "  ")
    assert lab.lab_dir() == (lab.REPO / ".lab").resolve()
    monkeypatch.setenv("VERBUND112_LAB_DIR", str(tmp_path / "x"))
    assert lab.lab_dir() == tmp_path / "x"


def test_a_folder_without_the_lab_marker_is_not_deleted(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep")
    with pytest.raises(LabError, match="not a lab folder"):
        lab.purge_lab_dir(tmp_path)
    assert (tmp_path / "precious.txt").read_text() == "keep"


def test_a_marked_folder_holding_a_repository_is_not_deleted(tmp_path: Path) -> None:
    (tmp_path / lab.LAB_MARKER).touch()
    (tmp_path / ".git").mkdir()
    with pytest.raises(LabError, match="repository"):
        lab.purge_lab_dir(tmp_path)
    assert (tmp_path / ".git").is_dir()


def test_the_repository_itself_is_never_deleted(monkeypatch) -> None:
    with pytest.raises(LabError):
        lab.purge_lab_dir(lab.REPO)  # no marker there; and it holds .git
    assert (lab.REPO / "pyproject.toml").is_file()


def test_a_lab_folder_is_deleted(tmp_path: Path) -> None:
    folder = tmp_path / "lab"
    (folder / "rootfs" / "etc").mkdir(parents=True)
    (folder / lab.LAB_MARKER).touch()
    lab.purge_lab_dir(folder)
    assert not folder.exists()
