"""Both sites' Asterisk configuration comes from one set of templates."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from pydantic import ValidationError

from verbund112 import asterisk_config

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
    assert re.search(r"^read = call,agent$", manager, re.M)
    assert re.search(r"^write = call,agent$", manager, re.M)
    for forbidden in ("system", "config", "command", "originate", "all"):
        assert not re.search(rf"^(read|write) = .*\b{forbidden}\b", manager, re.M)
    assert f"secret = {secrets.ami_secret}" in manager
    assert "bindaddr = 127.0.0.1" in manager


def test_carrier_is_matched_by_address_and_keeps_pidf_lo(rendered) -> None:
    site, _, files = rendered
    pjsip = files["pjsip.conf"]
    carrier = pjsip.split("[carrier]")[1]
    assert "geoloc_incoming_call_profile = <prefer_incoming>" in carrier
    assert "trust_id_inbound = yes" in carrier
    assert f"match = {site.carrier_match[0]}" in pjsip.split("[carrier]")[2]


def test_the_dialplan_never_hangs_up_on_a_112_caller(rendered) -> None:
    _, _, files = rendered
    dialplan = files["extensions.conf"]
    for context in ("v112-emergency", "v112-local", "v112-partner"):
        body = dialplan.split(f"[{context}]")[1].split("\n[")[0]
        assert "Hangup" not in body, context
    # the only Hangup refuses the partner's leg; the partner keeps the caller
    assert dialplan.count("Hangup(") == 1
    assert "Hangup(34)" in dialplan.split("[from-intersite]")[1]


def test_the_rendered_files_differ_only_in_site_values() -> None:
    jena = asterisk_config.load_site("jena")
    gera = asterisk_config.load_site("gera")
    secrets = asterisk_config.SiteSecrets(
        ami_secret="s" * 16, dispatcher_passwords={s: "p" * 12 for s in [*jena.dispatchers, *gera.dispatchers]}
    )
    jena_files = asterisk_config.render(jena, secrets)
    gera_files = asterisk_config.render(gera, secrets)
    normalise = str.maketrans({})
    swapped = {name: text.replace("jena", "SITE").replace("gera", "PARTNER") for name, text in jena_files.items()}
    other = {name: text.replace("gera", "SITE").replace("jena", "PARTNER") for name, text in gera_files.items()}
    for name in ("extensions.conf", "manager.conf", "modules.conf", "asterisk.conf"):
        assert swapped[name].translate(normalise) == other[name].translate(normalise), name


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"partner": "jena"}, "own partner"),
        ({"partner_queue_wait_s": 30, "partner_ring_s": 20}, "shorter"),
        ({"dispatchers": ["Jena D1"]}, "pattern"),
        ({"dispatchers": []}, "at least 1"),
    ],
)
def test_invalid_site_values_are_refused(change: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        asterisk_config.load_site("jena", **change)


def test_secrets_cannot_inject_configuration() -> None:
    with pytest.raises(ValidationError):
        asterisk_config.SiteSecrets(ami_secret="abcdefghijkl\n[evil]", dispatcher_passwords={})


def test_no_secret_is_committed() -> None:
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    for path in tracked.split():
        if path.endswith((".yaml", ".conf", ".j2", ".json")) and (REPO / path).is_file():
            text = (REPO / path).read_text(errors="replace")
            assert not re.search(r"(secret|password)\s*[:=]\s*[A-Za-z0-9_-]{8,}", text), path
