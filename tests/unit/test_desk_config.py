"""The desk endpoints as rendered: address ACL, one device per seat, qualify.

The behaviour itself is tested against the real Asterisk in tests/integration/test_desks.py.
"""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from verbund112 import asterisk_config


def rendered(**overrides: object) -> tuple[asterisk_config.SiteValues, dict[str, str]]:
    site = asterisk_config.load_site("jena", **overrides)
    return site, asterisk_config.render(site, asterisk_config.SiteSecrets.generate(site))


def section(text: str, name: str, kind: str) -> str:
    """The body of the pjsip.conf section [name] of a type."""
    for body in re.split(r"^\[", text, flags=re.M):
        if body.startswith(f"{name}]") and re.search(rf"^type = {kind}$", body, re.M):
            return body
    raise AssertionError(f"no [{name}] of type {kind}")


def test_every_desk_takes_requests_and_contacts_from_the_desk_networks_only() -> None:
    site, files = rendered(desk_networks=["10.20.0.0/24", "10.21.0.0/25"])
    acl = files["acl.conf"].split("[v112-desks]")[1]
    assert re.findall(r"^(deny|permit) = (\S+)$", acl, re.M) == [
        ("deny", "0.0.0.0/0.0.0.0"), ("deny", "::/0"), ("permit", "10.20.0.0/24"), ("permit", "10.21.0.0/25"),
    ]  # fmt: skip
    for seat in site.dispatchers:
        endpoint = section(files["pjsip.conf"], seat, "endpoint")
        assert re.search(r"^acl = v112-desks$", endpoint, re.M)
        assert re.search(r"^contact_acl = v112-desks$", endpoint, re.M)
    # the carrier and the partner are not desks: no desk ACL may refuse a 112 call
    for trunk in ("carrier", "intersite"):
        assert "acl" not in section(files["pjsip.conf"], trunk, "endpoint")


def test_a_seat_keeps_its_desk_and_a_dead_desk_is_found_by_qualify() -> None:
    site, files = rendered(desk_qualify_s=7)
    for seat in site.dispatchers:
        aor = section(files["pjsip.conf"], seat, "aor")
        assert re.search(r"^max_contacts = 1$", aor, re.M)
        assert re.search(r"^remove_existing = no$", aor, re.M)
        assert re.search(r"^remove_unavailable = yes$", aor, re.M)
        assert re.search(r"^qualify_frequency = 7$", aor, re.M)


@pytest.mark.parametrize(
    ("networks", "message"),
    [([], "at least 1 item"), (["desks.example"], "not a valid IPv4 or IPv6 network"),
     (["10.20.0.5/24"], "not a valid IPv4 or IPv6 network")],
)  # fmt: skip
def test_desk_networks_must_be_networks(networks: list[str], message: str) -> None:
    assert asterisk_config.load_site("jena", desk_networks=["10.20.0.0/24", "fd00:112::/64"]).desk_networks
    with pytest.raises(ValidationError, match=message):
        asterisk_config.load_site("jena", desk_networks=networks)
