"""Both sites' Asterisk configuration comes from one set of templates."""

from __future__ import annotations

import itertools
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from pydantic import ValidationError

from telephony import dialplan as telephony_dialplan
from verbund112 import asterisk_config, shipped
from verbund112.cli import main

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["jena", "gera"])
def rendered(request: pytest.FixtureRequest) -> tuple[asterisk_config.SiteValues, asterisk_config.SiteSecrets, dict]:
    site = asterisk_config.load_site(request.param)
    secrets = asterisk_config.SiteSecrets.generate(site)
    return site, secrets, asterisk_config.render(site, secrets)


def test_every_site_gets_the_full_set_of_files(rendered) -> None:
    _, _, files = rendered
    for name in ("asterisk.conf", "modules.conf", "pjsip.conf", "extensions.conf", "queues.conf", "manager.conf"):
        assert name in files


def test_dispatchers_are_queue_members_named_by_their_id(rendered) -> None:
    site, _, files = rendered
    members = re.findall(r"^member => PJSIP/(\S+),0,(\S+),PJSIP/\S+$", files["queues.conf"], re.M)
    assert members == [(seat, seat) for seat in site.dispatchers]


def test_the_ami_user_gets_only_the_classes_it_needs(rendered) -> None:
    _, secrets, files = rendered
    manager = files["manager.conf"]
    assert re.search(r"^read = call,agent,user$", manager, re.M)
    # Getvar and DBGetTree need reporting; QueueStatus, QueueWithdrawCaller and Ping no class at all
    assert re.search(r"^write = reporting$", manager, re.M)
    for forbidden in ("system", "config", "command", "originate", "all"):
        assert not re.search(rf"^(read|write) = .*\b{forbidden}\b", manager, re.M)
    assert f"secret = {secrets.ami_secret}" in manager
    assert "bindaddr = 127.0.0.1" in manager
    user = manager.split("[verbund112]")[1]
    assert re.findall(r"^(deny|permit) = (.*)$", user, re.M) == [
        ("deny", "0.0.0.0/0.0.0.0"), ("deny", "::/0"), ("permit", "127.0.0.1/32"),
    ]  # fmt: skip


def test_the_fastagi_secret_is_where_the_service_asks_for_it_and_nowhere_else(rendered) -> None:
    """In verbund112.conf (read with AST_CONFIG), never in the dialplan (a global or the AGI URL are logged)."""
    _, secrets, files = rendered
    file, category, key = re.fullmatch(r"AST_CONFIG\((.+),(.+),(.+)\)", telephony_dialplan.FASTAGI_SECRET).groups()
    assert file == telephony_dialplan.FASTAGI_SECRET_FILE
    assert re.search(rf"^\[{category}\]\n{key} = {secrets.fastagi_secret}$", files[file], re.M)
    assert [name for name, text in files.items() if secrets.fastagi_secret in text] == [file]
    assert re.search(r"^load => func_config\.so$", files["modules.conf"], re.M)


def test_carrier_is_matched_by_address_and_keeps_pidf_lo(rendered) -> None:
    site, _, files = rendered
    pjsip = files["pjsip.conf"]
    carrier = pjsip.split("[carrier]")[1]
    assert "geoloc_incoming_call_profile = <prefer_incoming>" in carrier
    assert "trust_id_inbound = yes" in carrier
    assert f"match = {site.carrier_match[0]}" in pjsip.split("[carrier]")[2]


def test_desks_get_the_number_of_a_caller_with_clir(rendered) -> None:
    site, _, files = rendered
    for seat in site.dispatchers:
        endpoint = files["pjsip.conf"].split(f"[{seat}]\ntype = endpoint\n")[1].split("\n[")[0]
        assert "trust_id_outbound = yes" in endpoint and "send_pai = yes" in endpoint, seat


def test_the_dialplan_never_hangs_up_on_a_112_caller(rendered) -> None:
    _, _, files = rendered
    dialplan = files["extensions.conf"]
    for context in ("v112-emergency", "v112-local", "v112-partner", "v112-external"):
        body = dialplan.split(f"[{context}]")[1].split("\n[")[0]
        assert "Hangup" not in body, context
    # Two Hangups, both on inter-site legs, never on a caller of ours: one refuses the partner's
    # leg that nobody here took (the partner keeps the caller), ...
    intersite = dialplan.split("[from-intersite]")[1].split("\n[")[0]
    assert dialplan.count("Hangup(") == 2
    assert intersite.count("Hangup(") == 2
    assert re.search(r"Queue\(.*\n.*Verbose\(.*\n same => n,Hangup\(34\)\n", intersite)
    # ... the other a forged leg (not over the TLS transport), reached only from the first step
    assert intersite.count("?forged)") == 1
    assert re.search(r"^exten => [^,]+,1,GotoIf\(.*CHANNEL\(pjsip,local_addr\).*\?forged\)$", intersite, re.M)
    assert re.search(r"same => n\(forged\),Verbose\(.*\)\n same => n,Hangup\(21\)\n", intersite)


def test_the_trunk_is_tls_with_mutual_certificates_and_only_its_legs_are_taken(rendered) -> None:
    site, _, files = rendered
    pjsip = files["pjsip.conf"]
    transport = pjsip.split("[transport-intersite]")[1].split("\n[")[0]
    for line in ("protocol = tls", "method = tlsv1_2", "verify_client = yes", "require_client_cert = yes",
                 "verify_server = yes", f"bind = {site.intersite_listen}",
                 f"ca_list_file = {site.intersite_ca_file}"):  # fmt: skip
        assert line in transport
    endpoint = pjsip.split("[intersite]")[1]
    assert "transport = transport-intersite" in endpoint
    assert f"contact = sip:{site.partner_host}:{site.partner_tls_port};transport=tls" in pjsip
    assert f'"{site.intersite_listen}"' in files["extensions.conf"]


def test_a_caller_still_on_the_line_after_the_external_leg_goes_to_the_local_queue() -> None:
    site = asterisk_config.load_site("jena", carrier_outbound_uri="sip:192.0.2.10:5060")
    dialplan = asterisk_config.render(site, asterisk_config.SiteSecrets.generate(site))["extensions.conf"]
    external = dialplan.split("[v112-external]")[1].split("\n[")[0]
    (dial,) = re.findall(r"^ same => n,Dial\((.*)\)$", external, re.M)
    assert "g" in "".join(dial.split(",")[2:3]), "without g a leg that answers and ends hangs up the caller"
    after_dial = list(
        itertools.takewhile(lambda line: line.startswith(" same"), external.split("Dial(")[1].splitlines()[1:])
    )
    assert after_dial[-1].endswith("Goto(v112-local,s,1)") and not any("GotoIf" in line for line in after_dial)
    for line in external.splitlines():  # the reason is logged, never a number
        assert "Verbose" not in line or ("_TARGET" not in line and "CALLER" not in line), line


def test_the_rendered_files_differ_only_in_site_values() -> None:
    jena = asterisk_config.load_site("jena")
    gera = asterisk_config.load_site("gera")
    secrets = asterisk_config.SiteSecrets(
        ami_secret="s" * 16, fastagi_secret="f" * 16,
        dispatcher_passwords={s: "p" * 12 for s in [*jena.dispatchers, *gera.dispatchers]},
    )  # fmt: skip
    jena_files = asterisk_config.render(jena, secrets)
    gera_files = asterisk_config.render(gera, secrets)
    normalise = str.maketrans({})
    swapped = {name: text.replace("jena", "SITE").replace("gera", "PARTNER") for name, text in jena_files.items()}
    other = {name: text.replace("gera", "SITE").replace("jena", "PARTNER") for name, text in gera_files.items()}
    # the trunk's address is a site value too
    swapped = {name: text.replace(jena.intersite_address, "ADDRESS") for name, text in swapped.items()}
    other = {name: text.replace(gera.intersite_address, "ADDRESS") for name, text in other.items()}
    for name in ("extensions.conf", "manager.conf", "modules.conf", "asterisk.conf"):
        assert swapped[name].translate(normalise) == other[name].translate(normalise), name


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"partner": "jena"}, "own partner"),
        ({"partner_queue_wait_s": 30, "partner_ring_s": 20}, "shorter"),
        ({"dispatchers": ["Jena D1"]}, "pattern"),
        ({"dispatchers": []}, "at least 1"),
        ({"ami_permit": ["10.0.0.0/24"]}, "is a network"),
        ({"ami_permit": []}, "at least 1"),
        ({"ami_bind_address": "0.0.0.0"}, "every address"),
        ({"intersite_address": "0.0.0.0"}, "concrete address"),
        ({"intersite_address": "asterisk-jena.example"}, "an IP address"),
        ({"intersite_port": 5060}, "differ from sip_port"),
    ],
)
def test_invalid_site_values_are_refused(change: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        asterisk_config.load_site("jena", **change)


def test_the_ami_permit_takes_single_hosts_in_any_spelling() -> None:
    site = asterisk_config.load_site("jena", ami_permit=["192.0.2.7", "192.0.2.8/255.255.255.255", "2001:db8::7"])
    assert site.ami_permit == ["192.0.2.7/32", "192.0.2.8/32", "2001:db8::7/128"]


def test_secrets_cannot_inject_configuration() -> None:
    with pytest.raises(ValidationError):
        asterisk_config.SiteSecrets(ami_secret="abcdefghijkl\n[evil]", fastagi_secret="f" * 16, dispatcher_passwords={})
    with pytest.raises(ValidationError):
        asterisk_config.SiteSecrets(ami_secret="s" * 16, fastagi_secret="f" * 16 + "\n[evil]", dispatcher_passwords={})


def test_no_secret_is_committed() -> None:
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    for path in tracked.split():
        if path.endswith((".yaml", ".conf", ".j2", ".json")) and (REPO / path).is_file():
            text = (REPO / path).read_text(errors="replace")
            assert not re.search(r"(secret|password)\s*[:=]\s*[A-Za-z0-9_-]{8,}", text), path


def test_the_shipped_files_are_the_repositorys_folders_in_a_checkout() -> None:
    # found through importlib.resources (the editable install maps the folders into the package)
    assert shipped.asterisk_templates() == REPO / "asterisk-config/templates"
    assert shipped.site_values("gera") == REPO / "asterisk-config/sites/gera.yaml"
    assert shipped.rules_file() == REPO / "rules/verbund112.yaml"


def _secrets_file(tmp_path: Path) -> Path:
    seats = asterisk_config.load_site("jena").dispatchers
    path = tmp_path / "secrets.yaml"
    path.write_text(yaml.safe_dump({"ami_secret": "s" * 16, "fastagi_secret": "f" * 16,
                                    "dispatcher_passwords": {d: "p" * 12 for d in seats}}))  # fmt: skip
    return path


def render_cli(*args: str | Path) -> tuple[int, str]:
    # this host has no asterisk group: the files get root's (tests/unit/test_asterisk_install.py sets one)
    result = CliRunner().invoke(main, ["asterisk-config", "render", "--owner", "root:root", *map(str, args)])
    return result.exit_code, result.output


def test_render_takes_templates_and_site_values_from_any_folder(tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    shutil.copytree(shipped.asterisk_templates(), templates)
    modules = templates / "modules.conf.j2"
    modules.write_text(modules.read_text() + "; our own template\n")
    values = yaml.safe_load(shipped.site_values("jena").read_text())
    (tmp_path / "values").mkdir()
    site_file = tmp_path / "values/jena-test.yaml"
    site_file.write_text(yaml.safe_dump({**values, "sip_port": 5999}))
    secrets = _secrets_file(tmp_path)

    own = render_cli("--site", site_file, "--templates", templates, "--secrets", secrets, "--out", tmp_path / "own")
    default = render_cli("--site", "jena", "--secrets", secrets, "--out", tmp_path / "shipped")

    assert own[0] == 0, own[1]
    assert default[0] == 0, default[1]
    assert (tmp_path / "own/modules.conf").read_text().endswith("; our own template\n")
    assert "; our own template" not in (tmp_path / "shipped/modules.conf").read_text()
    assert re.search(r"^bind = .*:5999$", (tmp_path / "own/pjsip.conf").read_text(), re.M)
    assert re.search(r"^bind = .*:5060$", (tmp_path / "shipped/pjsip.conf").read_text(), re.M)


def test_a_templates_folder_without_templates_is_refused(tmp_path: Path) -> None:
    empty, secrets = tmp_path / "empty", _secrets_file(tmp_path)
    empty.mkdir()
    code, output = render_cli("--site", "jena", "--templates", empty, "--secrets", secrets, "--out", tmp_path / "out")
    assert code == 1
    assert "no *.conf.j2 templates" in output
    assert not (tmp_path / "out").exists()


def test_an_ipv6_trunk_address_is_written_as_pjsip_reports_it() -> None:
    site = asterisk_config.load_site("jena", intersite_address="2001:db8::10", intersite_port=5071)
    files = asterisk_config.render(site, asterisk_config.SiteSecrets.generate(site))
    assert "bind = [2001:db8::10]:5071" in files["pjsip.conf"]
    assert '"[2001:db8::10]:5071"' in files["extensions.conf"]
