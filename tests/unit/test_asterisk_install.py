"""`verbund112 asterisk-config render` into a folder as an operator runs it on the Asterisk host.

It shows a diff (secrets masked), keeps a dated backup of every file it replaces, sets mode 0640
and the owner Asterisk needs, and never touches a file it did not write. The tests run as root
(the owner is really changed); this host has no `asterisk` group, so they name a group by number.
"""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from verbund112 import asterisk_config, asterisk_install
from verbund112.cli import main

SITE = asterisk_config.load_site("jena")
GROUP = 4242  # stands in for the asterisk group
OWNER = f"0:{GROUP}"
TEMPLATES = Path(__file__).resolve().parents[2] / "asterisk-config" / "templates"


def secrets_env(ami_secret: str = "ami-secret-0123456789") -> dict[str, str]:
    env = {"VERBUND112_AMI_SECRET": ami_secret, "VERBUND112_FASTAGI_SECRET": "fastagi-secret-0123456789"}
    env |= {f"VERBUND112_DISPATCHER_PASSWORD_{s.upper().replace('-', '_')}": f"pw-{s}-0123" for s in SITE.dispatchers}
    return env


def render(out: Path, *args: str, env: dict[str, str] | None = None, site: str = "jena") -> Result:
    return CliRunner().invoke(
        main, ["asterisk-config", "render", "--site", site, "--out", str(out), *args], env=env or secrets_env()
    )


def site_file(tmp_path: Path, **changes: object) -> str:
    path = tmp_path / "jena-site.yaml"
    path.write_text(json.dumps({**SITE.model_dump(mode="json", exclude={"paths"}), **changes}))
    return str(path)


def contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def test_a_new_folder_gets_every_file_0640_with_asterisks_group_and_a_manifest(tmp_path: Path) -> None:
    out = tmp_path / "asterisk"
    result = render(out, "--owner", OWNER)
    assert result.exit_code == 0, result.output
    expected = asterisk_config.render(SITE, asterisk_config.SiteSecrets.from_environment(SITE, secrets_env()))
    written = {p.name: p for p in out.iterdir()}
    assert set(written) == {*expected, asterisk_install.MANIFEST}
    for name, path in written.items():
        info = path.stat()
        assert stat.S_IMODE(info.st_mode) == 0o640, name  # never world-readable: several hold secrets
        assert (info.st_uid, info.st_gid) == (0, GROUP), name
    assert stat.S_IMODE(out.stat().st_mode) == 0o750
    assert (out.stat().st_uid, out.stat().st_gid) == (0, GROUP)
    manifest = json.loads((out / asterisk_install.MANIFEST).read_text())
    assert set(manifest["files"]) == set(expected)
    assert "manager.conf" in result.output  # the diff against nothing: every file is new
    assert f"{len(expected)} changed, 0 unchanged" in result.output


def test_a_second_render_keeps_a_dated_backup_of_each_file_it_replaces(tmp_path: Path) -> None:
    out = tmp_path / "asterisk"
    assert render(out, "--owner", OWNER).exit_code == 0
    before = contents(out)
    result = render(out, "--owner", OWNER, site=site_file(tmp_path, member_ring_s=11))
    assert result.exit_code == 0, result.output
    (backup,) = (out / asterisk_install.BACKUPS).iterdir()
    assert str(backup) in result.output
    assert stat.S_IMODE(backup.stat().st_mode) == 0o700
    changed = {name for name, content in contents(out).items() if before[name] != content}
    assert "queues.conf" in changed
    # exactly the files it replaced, as they were, and the manifest that named them
    assert contents(backup) == {name: before[name] for name in changed}
    assert "-timeout = 15\n" in result.output and "+timeout = 11\n" in result.output
    # a rollback is a copy back
    for saved in backup.iterdir():
        shutil.copy2(saved, out / saved.name)
    assert contents(out) == before


def test_the_dry_run_shows_the_diff_with_secrets_masked_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "asterisk"
    assert render(out, "--owner", OWNER).exit_code == 0
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()}
    for flag in ("--dry-run", "--diff-only"):
        result = render(out, flag, env=secrets_env("a-new-ami-secret-987"), site=site_file(tmp_path, member_ring_s=9))
        assert result.exit_code == 0, result.output
        assert "+timeout = 9\n" in result.output
        assert "# manager.conf: only secret values differ" in result.output
        assert "a-new-ami-secret-987" not in result.output and "ami-secret-0123456789" not in result.output
        assert "dry run, nothing written" in result.output
        assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()} == before
    first = render(tmp_path / "fresh", "--dry-run")
    assert "secret = ********" in first.output and "pw-jena-d1-0123" not in first.output
    assert not (tmp_path / "fresh").exists()


def test_files_it_did_not_write_are_left_alone_and_named_and_nothing_is_written(tmp_path: Path) -> None:
    out = tmp_path / "asterisk"
    out.mkdir()
    (out / "pjsip.conf").write_text("; Debian's stock pjsip.conf\n")
    (out / "adsi.conf").write_text("; not one of ours\n")
    result = render(out, "--owner", OWNER)
    assert result.exit_code == 1
    assert f"{out / 'pjsip.conf'}: not written by verbund112" in result.output
    assert "nothing written" in result.output
    assert contents(out) == {"pjsip.conf": b"; Debian's stock pjsip.conf\n", "adsi.conf": b"; not one of ours\n"}


def test_a_file_of_its_own_name_list_only_is_replaced_others_beside_them_stay(tmp_path: Path) -> None:
    out = tmp_path / "asterisk"
    assert render(out, "--owner", OWNER).exit_code == 0
    extra = out / "adsi.conf"
    extra.write_text("; an admin's own file\n")
    extra.chmod(0o600)
    assert render(out, "--owner", OWNER, site=site_file(tmp_path, member_ring_s=12)).exit_code == 0
    assert extra.read_text() == "; an admin's own file\n"
    assert stat.S_IMODE(extra.stat().st_mode) == 0o600


def test_a_file_edited_by_hand_is_named_and_kept_in_the_backup(tmp_path: Path) -> None:
    out = tmp_path / "asterisk"
    assert render(out, "--owner", OWNER).exit_code == 0
    edited = (out / "queues.conf").read_text() + "; tuned by hand\n"
    (out / "queues.conf").write_text(edited)
    result = render(out, "--owner", OWNER)
    assert result.exit_code == 0, result.output
    assert f"{out / 'queues.conf'}: changed by hand since verbund112 wrote it" in result.output
    (backup,) = (out / asterisk_install.BACKUPS).iterdir()
    assert (backup / "queues.conf").read_text() == edited
    assert "; tuned by hand" not in (out / "queues.conf").read_text()


def test_a_file_no_longer_rendered_is_removed_into_the_backup(tmp_path: Path) -> None:
    out = tmp_path / "asterisk"
    assert render(out, "--owner", OWNER).exit_code == 0
    udptl = (out / "udptl.conf").read_bytes()
    fewer = tmp_path / "templates"
    shutil.copytree(TEMPLATES, fewer)
    (fewer / "udptl.conf.j2").unlink()
    result = render(out, "--owner", OWNER, "--templates", str(fewer))
    assert result.exit_code == 0, result.output
    assert "1 to remove" in result.output
    assert not (out / "udptl.conf").exists()
    (backup,) = (out / asterisk_install.BACKUPS).iterdir()
    assert (backup / "udptl.conf").read_bytes() == udptl
    assert "udptl.conf" not in json.loads((out / asterisk_install.MANIFEST).read_text())["files"]


@pytest.mark.parametrize("owner", ["root:no-such-group-v112", "no-such-user-v112:root", "root"])
def test_an_owner_that_does_not_exist_is_refused_before_anything_is_written(tmp_path: Path, owner: str) -> None:
    out = tmp_path / "asterisk"
    result = render(out, "--owner", owner)
    assert result.exit_code == 1
    assert "owner" in result.output
    assert not out.exists()
