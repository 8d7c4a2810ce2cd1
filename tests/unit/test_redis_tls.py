"""TLS to the Verbund's Redis (settings `redis.tls`): the settings, the files checked before any
connection (at start and by check-config), and a plain Redis as ``rediss://`` against a real
TLS-only redis-server with throwaway certificates (lab/pki.py).

The Sentinel set over TLS, with a failover, is tests/integration/test_redis_tls.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import prometheus_client as prom
import pytest
from pydantic import ValidationError

from lab import pki
from lab.processes import RedisServer
from routing.decision import AmlFix
from routing.location import Position
from tests.unit.test_check_config import EXAMPLES, check, example, line_of, problems
from tests.unit.test_serve_process import start_serve
from verbund112.settings import load_settings
from verbund112.store import RedisSettings, RedisTlsSettings, Store, StoreError, StoreSetupError, tls_file_problems
from verbund112.store.records import AmlFixRecord

NUMBER = "+4915112345679"


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pki.SiteCertificate]:
    """The Redis CA's certificates (the server's, a service's) and a stranger: a CA nobody here trusts."""
    directory = tmp_path_factory.mktemp("pki")
    ours = pki.redis_pki(directory / "redis", ["redis-single", "service-jena"], "127.0.0.1")
    stranger = pki.redis_pki(directory / "stranger", ["service-jena"], "127.0.0.1")["service-jena"]
    return {**ours, "stranger": stranger}


@pytest.fixture(scope="module")
def tls_redis(
    tmp_path_factory: pytest.TempPathFactory, certificates: dict[str, pki.SiteCertificate]
) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis-tls"), tls=certificates["redis-single"])
    server.start()
    try:
        yield server
    finally:
        server.stop()


def tls_of(certificate: pki.SiteCertificate, *, ca: Path | None = None, with_key: bool = True) -> RedisTlsSettings:
    return RedisTlsSettings(
        ca_file=ca or certificate.ca,
        cert_file=certificate.cert if with_key else None,
        key_file=certificate.key if with_key else None,
    )


def fix_record(at: float) -> AmlFixRecord:
    return AmlFixRecord.of(AmlFix(Position(50.93, 11.59, 10.0, "Circle", "GNSS"), at), at)


# -- settings ---------------------------------------------------------------------------------------


def test_tls_settings_come_from_the_file_or_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "jena.yaml"
    config.write_text("redis:\n  sentinels: ['10.112.1.10:26379']\n  tls:\n    ca_file: /etc/v112/redis-ca.crt\n")
    monkeypatch.setenv("VERBUND112_REDIS__TLS__CA_FILE", "/etc/v112/other-ca.crt")  # the environment beats the file
    monkeypatch.setenv("VERBUND112_REDIS__TLS__CERT_FILE", "/etc/v112/jena.crt")
    monkeypatch.setenv("VERBUND112_REDIS__TLS__KEY_FILE", "/etc/v112/jena.key")
    tls = load_settings(config).redis.tls
    assert tls is not None and tls.check_hostname
    assert (tls.ca_file, tls.cert_file, tls.key_file) == (
        Path("/etc/v112/other-ca.crt"), Path("/etc/v112/jena.crt"), Path("/etc/v112/jena.key"),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("redis", "message"),
    [
        ({"sentinels": ["a:1"], "tls": {"ca_file": "ca.crt", "cert_file": "c.crt"}}, "cert_file and key_file go"),
        ({"url": "redis://h:6379/0", "tls": {"ca_file": "ca.crt"}}, "rediss:// url"),
        ({"tls": {"ca_file": "ca.crt"}}, "rediss:// url"),
        ({"url": "rediss://h:6379/0"}, "set redis.tls.ca_file"),
        ({"sentinels": ["a:1"], "tls": {"ca_file": "ca.crt", "key": "secret"}}, "Extra inputs"),
    ],
)
def test_tls_settings_that_cannot_work_are_refused(redis: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        RedisSettings.model_validate(redis)


# -- the files ----------------------------------------------------------------------------------------


def test_usable_files_have_no_problem(certificates: dict[str, pki.SiteCertificate]) -> None:
    assert tls_file_problems(tls_of(certificates["service-jena"])) == []
    assert tls_file_problems(tls_of(certificates["service-jena"], with_key=False)) == []


def test_a_missing_ca_an_open_key_and_a_key_of_another_certificate_are_named(
    certificates: dict[str, pki.SiteCertificate], tmp_path: Path
) -> None:
    mine, stranger = certificates["service-jena"], certificates["stranger"]
    missing = RedisTlsSettings(ca_file=tmp_path / "nowhere.crt", cert_file=mine.cert, key_file=mine.key)
    assert tls_file_problems(missing) == [("ca_file", f"{tmp_path / 'nowhere.crt'}: No such file or directory")]

    open_key = tmp_path / "open.key"
    open_key.write_bytes(mine.key.read_bytes())
    open_key.chmod(0o644)
    (problem,) = tls_file_problems(RedisTlsSettings(ca_file=mine.ca, cert_file=mine.cert, key_file=open_key))
    assert problem == ("key_file", f"{open_key} is open to everyone (mode 0644): 0600 or 0640 it must be")

    other_key = RedisTlsSettings(ca_file=mine.ca, cert_file=mine.cert, key_file=stranger.key)
    ((setting, what),) = tls_file_problems(other_key)
    assert setting == "cert_file" and "not a PEM certificate and its unencrypted key" in what

    not_pem = tmp_path / "ca.crt"
    not_pem.write_text("not a certificate\n")
    ((setting, what),) = tls_file_problems(RedisTlsSettings(ca_file=not_pem))
    assert setting == "ca_file" and "no PEM certificate" in what


def test_the_store_is_not_built_with_unusable_tls_files(tmp_path: Path) -> None:
    settings = RedisSettings(url="rediss://127.0.0.1:6379/0", tls=RedisTlsSettings(ca_file=tmp_path / "ca.crt"))
    with pytest.raises(StoreSetupError, match=r"redis\.tls\.ca_file: .*ca\.crt: No such file or directory"):
        Store(settings, prom.CollectorRegistry())


def test_check_config_names_the_line_of_an_unusable_tls_file(
    certificates: dict[str, pki.SiteCertificate], tmp_path: Path
) -> None:
    mine = certificates["service-jena"]
    open_key = tmp_path / "jena.key"
    open_key.write_bytes(mine.key.read_bytes())
    open_key.chmod(0o604)
    tls = f"  tls:\n    ca_file: {tmp_path / 'missing-ca.crt'}\n    cert_file: {mine.cert}\n    key_file: {open_key}\n"
    config = example(tmp_path, **{"  master_name: verbund112\n": f"  master_name: verbund112\n{tls}"})
    found = problems(check("--config", config, "--asterisk-dir", tmp_path / "not-installed"))
    assert found == [
        f"{config}:{line_of(config, 'ca_file')}: redis.tls.ca_file: {tmp_path / 'missing-ca.crt'}: "
        "No such file or directory",
        f"{config}:{line_of(config, 'key_file')}: redis.tls.key_file: {open_key} is open to everyone (mode 0604): "
        "0600 or 0640 it must be",
    ]


def test_the_examples_show_tls_and_pass_once_it_is_switched_on_with_real_files(
    certificates: dict[str, pki.SiteCertificate], tmp_path: Path
) -> None:
    mine = certificates["service-jena"]
    for site in ("jena", "gera"):
        text = (EXAMPLES / f"{site}.yaml").read_text()
        assert "  # tls:" in text, f"{site}.yaml does not show redis.tls"
    config = example(tmp_path, **{
        "  # tls:": "  tls:", "  #   ca_file: /etc/verbund112/redis-tls/redis-ca.crt": f"    ca_file: {mine.ca}",
        "  #   cert_file: /etc/verbund112/redis-tls/jena.crt": f"    cert_file: {mine.cert}",
        "  #   key_file: /etc/verbund112/redis-tls/jena.key": f"    key_file: {mine.key}",
    })  # fmt: skip
    result = check("--config", config, "--asterisk-dir", tmp_path / "not-installed")
    assert result.exit_code == 0, result.output
    tls = load_settings(config).redis.tls
    assert tls is not None and tls.cert_file == mine.cert


def test_serve_refuses_to_start_with_an_unusable_tls_file_and_says_which(tmp_path: Path) -> None:
    process, _ = start_serve(tmp_path, env={
        "VERBUND112_REDIS__URL": "rediss://127.0.0.1:6379/0",
        "VERBUND112_REDIS__TLS__CA_FILE": str(tmp_path / "redis-ca.crt"),
    })  # fmt: skip
    output, _ = process.communicate(timeout=30)
    assert process.returncode == 1
    assert f"configuration: redis.tls.ca_file: {tmp_path / 'redis-ca.crt'}: No such file or directory" in (
        output.decode()
    )


# -- a plain Redis over TLS (rediss://) ------------------------------------------------------------


async def test_a_store_with_the_ca_and_its_certificate_writes_and_reads_over_rediss(
    tls_redis: RedisServer, certificates: dict[str, pki.SiteCertificate]
) -> None:
    assert tls_redis.url.startswith("rediss://")
    settings = RedisSettings(url=tls_redis.url, timeout=2.0, tls=tls_of(certificates["service-jena"]))
    store = Store(settings, prom.CollectorRegistry())
    try:
        now = time.time()
        await store.add_aml_fix(NUMBER, fix_record(now), 3600)
        fix = await store.latest_aml_fix(NUMBER)
        assert fix is not None and fix.time == now
        assert store.status()["degraded"] is False
    finally:
        await store.close()


async def test_a_store_that_does_not_trust_the_servers_ca_is_refused_with_a_clear_error(
    tls_redis: RedisServer, certificates: dict[str, pki.SiteCertificate], caplog: pytest.LogCaptureFixture
) -> None:
    """The server's certificate is not signed by the CA the store trusts: an ERROR line that says
    so and what to check (once, not at every retry), counted; the store degraded, no hang."""
    stranger = certificates["stranger"]
    store = Store(RedisSettings(url=tls_redis.url, timeout=1.0, tls=tls_of(stranger)), prom.CollectorRegistry())
    try:
        async with asyncio.timeout(5):  # each read gives up within redis.timeout
            for _ in range(3):
                with pytest.raises(StoreError, match="CERTIFICATE_VERIFY_FAILED"):
                    await store.latest_aml_fix(NUMBER)
        errors = [r for r in caplog.records if r.levelno == logging.ERROR and "TLS handshake failed" in r.message]
        assert len(errors) == 1
        assert "CERTIFICATE_VERIFY_FAILED" in errors[0].message and "check redis.tls" in errors[0].message
        assert store.tls_refused.labels("CERTIFICATE_VERIFY_FAILED")._value.get() == 3
        assert store.status()["degraded"] is True
    finally:
        await store.close()
