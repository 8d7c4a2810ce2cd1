"""docker/compose.yaml agrees with the image and the settings: one site's service, Redis node and
sentinel on the host network, the settings file mounted where the image reads it, every secret a
file the service reads as a setting (and none written into the compose file).

Debian 12's podman-compose (1.0.3) cannot check the file: it has no `config` command, its
`--dry-run` creates the volumes and networks, and it adds its project network to every container,
which podman refuses with `network_mode: host` (docker/README.md).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from pydantic import SecretStr

from verbund112.settings import Settings
from web.settings import WebSettings

DOCKER = Path(__file__).resolve().parents[2] / "docker"
SITE_DIR = "${VERBUND112_SITE_DIR:-/etc/verbund112}"


def compose() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def image_environment() -> dict[str, str]:
    """The ENV of the Dockerfile's last stage."""
    text = (DOCKER / "Dockerfile").read_text().replace("\\\n", " ")
    found = {}
    for line in re.findall(r"^ENV (.+)$", text, re.M):
        found |= dict(re.findall(r"(\w+)=(\S+)", line))
    return found


def secret_settings() -> set[str]:
    """verbund112_<section>__<field> for every secret setting (the names a secrets folder holds)."""
    names = set()
    for section, field in Settings.model_fields.items():
        for name, inner in getattr(field.annotation, "model_fields", {}).items():
            if SecretStr in (inner.annotation, *getattr(inner.annotation, "__args__", ())) or name == "tokens":
                names.add(f"verbund112_{section}__{name}")
    return names


def test_one_site_on_the_host_network() -> None:
    services = compose()["services"]
    assert set(services) == {"verbund112", "redis", "sentinel"}
    assert {name: s["network_mode"] for name, s in services.items()} == dict.fromkeys(services, "host")
    assert all(s["restart"] == "always" for s in services.values())
    assert services["sentinel"]["command"][-1].endswith("--sentinel")


def test_the_settings_file_is_mounted_where_the_image_reads_it() -> None:
    service = compose()["services"]["verbund112"]
    assert service["build"] == {"context": "..", "dockerfile": "docker/Dockerfile"}
    environment = image_environment()
    settings_mount = f"{SITE_DIR}/verbund112.yaml:{environment['VERBUND112_CONFIG']}:ro"
    assert settings_mount in service["volumes"]
    assert environment["VERBUND112_SECRETS_DIR"] == "/run/secrets"  # where compose mounts its secrets


def test_every_secret_is_a_file_the_service_reads_as_a_setting() -> None:
    spec = compose()
    mounted = set(spec["services"]["verbund112"]["secrets"])
    assert mounted <= secret_settings()
    assert {"verbund112_ami__secret", "verbund112_fastagi__secret", "verbund112_web__tokens",
            "verbund112_redis__password", "verbund112_redis__sentinel_password"} <= mounted  # fmt: skip
    for name, secret in spec["secrets"].items():
        assert secret == {"file": f"{SITE_DIR}/secrets/{name}"}
    used = mounted | {s for service in spec["services"].values() for s in service.get("secrets", [])}
    assert used == set(spec["secrets"])
    assert "environment" not in spec["services"]["verbund112"]  # no secret in the file, nor in `ps`


def test_the_token_example_has_the_shape_the_settings_take() -> None:
    """The old image's example token ({"...": "read"}) did not; this one must load."""
    readme = (DOCKER / "README.md").read_text()
    (example,) = set(re.findall(r"`(\{\"<long random token>\": \{.*?\}\})`", readme))
    tokens = WebSettings(tokens=json.loads(example)).tokens
    assert [(grant.role, grant.name) for grant in tokens.values()] == [("admin", "alice")]
