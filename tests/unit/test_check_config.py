"""`verbund112 check-config`: settings, rules and Asterisk configuration checked together.

Each kind of problem is reported as `file:line: what` at the right line of a real file in
tmp_path; the shipped example configuration passes, also against a folder that
`asterisk-config render` wrote.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from tests.unit.test_asterisk_install import secrets_env
from verbund112.cli import main

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "deploy" / "examples"
TEMPLATES = REPO / "asterisk-config" / "templates"
SECRET = secrets_env()["VERBUND112_FASTAGI_SECRET"]
AMI_SECRET = secrets_env()["VERBUND112_AMI_SECRET"]


def check(*args: str | Path, env: dict[str, str] | None = None) -> Result:
    environment = {"VERBUND112_FASTAGI__SECRET": SECRET, "VERBUND112_AMI__SECRET": AMI_SECRET,
                   "VERBUND112_CONFIG": None, **(env or {})}  # fmt: skip
    return CliRunner().invoke(main, ["check-config", *map(str, args)], env=environment)


def problems(result: Result) -> list[str]:
    assert result.exit_code == 1, result.output
    return [line for line in result.output.splitlines() if not line.startswith("Error:")]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def example(tmp_path: Path, site: str = "jena", **replace: str) -> Path:
    text = (EXAMPLES / f"{site}.yaml").read_text()
    for old, new in replace.items():
        assert old in text
        text = text.replace(old, new)
    return write(tmp_path / f"{site}.yaml", text)


def line_of(path: Path, text: str) -> int:
    return next(n for n, line in enumerate(path.read_text().splitlines(), 1) if text in line)


@pytest.mark.parametrize("site", ["jena", "gera"])
def test_the_shipped_example_configuration_passes_with_one_summary_line(site: str, tmp_path: Path) -> None:
    result = check("--config", EXAMPLES / f"{site}.yaml", "--asterisk-dir", tmp_path / "not-installed")
    assert result.exit_code == 0, result.output
    assert result.output.count("\n") == 1
    assert result.output.startswith(f"configuration valid: settings {EXAMPLES / site}.yaml, rules ")
    assert f"Asterisk {site}: 20 files rendered" in result.output


def test_the_example_passes_against_the_folder_render_wrote(tmp_path: Path) -> None:
    out = tmp_path / "asterisk"
    rendered = CliRunner().invoke(main, ["asterisk-config", "render", "--site", "jena", "--out", str(out),
                                         "--owner", "root:root"], env=secrets_env())  # fmt: skip
    assert rendered.exit_code == 0, rendered.output
    result = check("--config", EXAMPLES / "jena.yaml", "--asterisk-dir", out)
    assert result.exit_code == 0, result.output
    assert f"{out} as rendered" in result.output


def test_a_yaml_syntax_error_in_the_settings_names_its_line(tmp_path: Path) -> None:
    config = example(tmp_path, **{"  port: 5038": "  port: [5038"})
    (problem,) = problems(check("--config", config))
    assert problem.startswith(f"{config}:{line_of(config, 'username')}: not valid YAML")


def test_a_bad_setting_names_the_line_of_its_key(tmp_path: Path) -> None:
    config = example(tmp_path, **{"  port: 5038": "  port: seventy", "web:\n": "web:\n  colour: blue\n"})
    found = problems(check("--config", config))
    assert f"{config}:{line_of(config, 'seventy')}: ami.port: Input should be a valid integer" in found[0]
    assert found[1].startswith(f"{config}:{line_of(config, 'colour')}: web.colour: Extra inputs are not permitted")
    assert len(found) == 2


def test_a_bad_setting_from_the_environment_names_the_variable(tmp_path: Path) -> None:
    found = problems(check("--config", EXAMPLES / "jena.yaml", env={"VERBUND112_WEB__PORT": "x"}))
    assert found == ["environment:0: VERBUND112_WEB__PORT: web.port: Input should be a valid integer, unable to parse "
                     "string as an integer"]  # fmt: skip


def test_no_fastagi_secret_is_a_problem_as_serve_would_refuse_to_start(tmp_path: Path) -> None:
    config = example(tmp_path)
    (problem,) = problems(check("--config", config, env={"VERBUND112_FASTAGI__SECRET": None}))
    assert problem.startswith(f"{config}:{line_of(config, 'fastagi:')}: fastagi.secret is not set")


def test_a_rules_problem_names_the_rules_file_and_line(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(REPO / "rules", rules)
    rules_file = rules / "verbund112.yaml"
    rules_file.write_text(rules_file.read_text().replace("aml_max_age_s: 600", "aml_max_age_s: -1"))
    config = example(tmp_path, **{"# rules_file: /var/lib/verbund112/jena/rules/verbund112.yaml":
                                  f"rules_file: {rules_file}"})  # fmt: skip
    (problem,) = problems(check("--config", config))
    assert problem.startswith(f"{rules_file}:{line_of(rules_file, 'aml_max_age_s')}: aml_max_age_s: Input should be")


def test_settings_that_disagree_with_the_asterisk_site_values_name_both_lines(tmp_path: Path) -> None:
    config = example(tmp_path, **{"  port: 4573": "  port: 4574"})
    site = write(tmp_path / "site.yaml", (REPO / "asterisk-config/sites/jena.yaml").read_text() + "ami_port: 5039\n")
    found = problems(check("--config", config, "--site", site))
    assert found == [
        f"{config}:{line_of(config, 'port: 5038')}: ami.port is 5038, but ami_port of the Asterisk site values is "
        f"5039 ({site}:{line_of(site, 'ami_port')})",
        f"{config}:{line_of(config, 'port: 4574')}: fastagi.port is 4574, but fastagi_url of the Asterisk site values "
        f"is 4573 ({site} (default))",
    ]


def test_a_site_and_queue_the_rules_do_not_know_are_problems(tmp_path: Path) -> None:
    config = example(tmp_path, **{"partner: gera": "partner: gera\nlocal_queue: 112-elsewhere"})
    found = problems(check("--config", config))
    assert found[0].startswith(f"{config}:{line_of(config, 'local_queue')}: the queue '112-elsewhere' is not the "
                               "rules' queue of jena ('112-jena')")  # fmt: skip


def test_a_bad_site_value_names_its_line_in_the_site_file(tmp_path: Path) -> None:
    site = write(tmp_path / "site.yaml", (REPO / "asterisk-config/sites/jena.yaml").read_text()
                 .replace("desk_networks: [203.0.113.0/25]", "desk_networks: [not-a-network]"))  # fmt: skip
    (problem,) = problems(check("--config", EXAMPLES / "jena.yaml", "--site", site))
    assert problem.startswith(f"{site}:{line_of(site, 'not-a-network')}: desk_networks.0: ")


def templates_with(tmp_path: Path, name: str, old: str, new: str) -> tuple[Path, Path]:
    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATES, templates)
    template = templates / name
    text = template.read_text()
    assert old in text
    template.write_text(text.replace(old, new, 1))
    return templates, template


def test_a_template_that_does_not_render_names_its_line(tmp_path: Path) -> None:
    templates, template = templates_with(tmp_path, "queues.conf.j2", "[general]", "[general]\n; {{ site.no_such }}")
    (problem,) = problems(check("--config", EXAMPLES / "jena.yaml", "--templates", templates))
    assert problem.startswith(f"{template}:{line_of(template, 'no_such')}: does not render: ")
    assert "no_such" in problem


def test_a_template_syntax_error_names_its_line(tmp_path: Path) -> None:
    templates, template = templates_with(tmp_path, "pjsip.conf.j2", "[global]", "[global]\n{% if %}")
    (problem,) = problems(check("--config", EXAMPLES / "jena.yaml", "--templates", templates))
    assert problem.startswith(f"{template}:{line_of(template, '{% if %}')}: does not render: ")


def test_a_missing_template_and_a_broken_dialplan_contract_are_named(tmp_path: Path) -> None:
    templates, extensions = templates_with(tmp_path, "extensions.conf.j2", "V112Round", "V112Rnd")
    (templates / "queues.conf.j2").unlink()
    found = problems(check("--config", EXAMPLES / "jena.yaml", "--templates", templates))
    assert found == [
        f"{templates / 'queues.conf.j2'}:0: missing: Asterisk needs queues.conf from it",
        f"{extensions}:0: the dialplan does not use 'V112Round', which the service relies on (telephony/dialplan.py)",
    ]


def test_an_installed_folder_that_is_not_what_render_would_write_is_named_at_the_line(tmp_path: Path) -> None:
    out = tmp_path / "asterisk"
    rendered = CliRunner().invoke(main, ["asterisk-config", "render", "--site", "jena", "--out", str(out),
                                         "--owner", "root:root"], env=secrets_env())  # fmt: skip
    assert rendered.exit_code == 0, rendered.output
    queues = out / "queues.conf"
    text = queues.read_text()
    queues.write_text(re.sub(r"^timeout = 15$", "timeout = 99", text, count=1, flags=re.M))
    (out / "rtp.conf").unlink()
    (out / "acl.conf").chmod(0o644)
    found = problems(check("--config", EXAMPLES / "jena.yaml", "--asterisk-dir", out))
    assert found == [
        f"{out / 'acl.conf'}:0: readable by everyone (mode 0644): 0640 it must be",
        f"{queues}:{line_of(queues, 'timeout = 99')}: differs from what asterisk-config render would write "
        "(see its --dry-run)",
        f"{out / 'rtp.conf'}:0: missing: asterisk-config render would write it",
    ]


def test_secrets_that_differ_from_the_installed_asterisks_are_named_without_their_values(tmp_path: Path) -> None:
    out = tmp_path / "asterisk"
    rendered = CliRunner().invoke(main, ["asterisk-config", "render", "--site", "jena", "--out", str(out),
                                         "--owner", "root:root"], env=secrets_env())  # fmt: skip
    assert rendered.exit_code == 0, rendered.output
    wrong = {"VERBUND112_AMI__SECRET": "not-the-ami-secret", "VERBUND112_FASTAGI__SECRET": "not-the-fastagi-secret"}
    result = check("--config", EXAMPLES / "jena.yaml", "--asterisk-dir", out, env=wrong)
    manager, verbund112_conf = out / "manager.conf", out / "verbund112.conf"
    assert problems(result) == [
        f"{manager}:{line_of(manager, AMI_SECRET)}: the secret of [verbund112] is not ami.secret of the settings: "
        "the service cannot log in to AMI",
        f"{verbund112_conf}:{line_of(verbund112_conf, SECRET)}: the secret of [fastagi] is not fastagi.secret of the "
        "settings: every FastAGI request is refused and calls take the dialplan's own route",
    ]
    assert all(secret not in result.output for secret in (AMI_SECRET, SECRET, *wrong.values()))
