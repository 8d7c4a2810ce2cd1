"""One typed settings object: defaults < YAML file < environment."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from verbund112.settings import load_settings


def test_defaults_then_file_then_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "gera.yaml"
    config.write_text("site: gera\npartner: jena\nami:\n  port: 6000\n  action_timeout: 1.5\n")
    monkeypatch.setenv("VERBUND112_AMI__PORT", "7000")
    monkeypatch.setenv("VERBUND112_AMI__SECRET", "from-the-environment")

    settings = load_settings(config)

    assert settings.site == "gera"  # file
    assert settings.queue == "112-gera"  # derived default
    assert settings.ami.port == 7000  # environment beats file
    assert settings.ami.action_timeout == 1.5  # file beats default
    assert settings.ami.secret.get_secret_value() == "from-the-environment"
    assert settings.fastagi.deadline == 0.5  # default
    assert "from-the-environment" not in repr(settings)


def test_a_bad_file_names_the_field(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("ami:\n  port: seventy\n")
    with pytest.raises(ValidationError, match=r"ami\.port"):
        load_settings(config)


def test_unknown_keys_are_refused(tmp_path: Path) -> None:
    config = tmp_path / "typo.yaml"
    config.write_text("fastagi:\n  deadlin: 0.2\n")
    with pytest.raises(ValidationError, match="deadlin"):
        load_settings(config)


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_settings(tmp_path / "nowhere.yaml")


def test_redis_through_the_sentinels_with_passwords_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "jena.yaml"
    config.write_text("redis:\n  sentinels: ['10.1.0.5:26379', '10.2.0.5:26379', 'witness.example:26379']\n")
    monkeypatch.setenv("VERBUND112_REDIS__PASSWORD", "nodes-secret")
    monkeypatch.setenv("VERBUND112_REDIS__SENTINEL_PASSWORD", "sentinels-secret")

    redis = load_settings(config).redis

    assert redis.through_sentinels and redis.url is None and redis.master_name == "verbund112"
    assert redis.acks_needed == 1  # the replica at the other site must have each kept write
    assert redis.password is not None and redis.password.get_secret_value() == "nodes-secret"
    assert "secret" not in repr(redis)


def test_redis_is_either_one_plain_redis_or_the_sentinels_never_both(tmp_path: Path) -> None:
    config = tmp_path / "both.yaml"
    config.write_text("redis:\n  url: redis://10.1.0.5:6379/0\n  sentinels: ['10.1.0.5:26379']\n")
    with pytest.raises(ValidationError, match="either url"):
        load_settings(config)
    config.write_text("redis:\n  sentinels: ['no port here']\n")
    with pytest.raises(ValidationError, match=r"redis\.sentinels\.0"):
        load_settings(config)
    plain = load_settings().redis  # neither: the plain Redis on 127.0.0.1:6379
    assert plain.url is None and not plain.through_sentinels and plain.acks_needed == 0


def test_secrets_from_files_in_the_secrets_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A container's mounted secrets: one file per value, named like its variable; the environment wins."""
    config = tmp_path / "jena.yaml"
    config.write_text("site: jena\nami:\n  port: 6000\n")
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "verbund112_ami__secret").write_text("ami-from-a-file\n")
    (secrets / "verbund112_fastagi__secret").write_text("fastagi-from-a-file-0123")
    tokens = '{"a-long-random-admin-token-0123": {"role": "admin", "name": "a"}}'
    (secrets / "verbund112_web__tokens").write_text(tokens)
    (secrets / "verbund112_redis__password").write_text("redis-from-a-file")
    monkeypatch.setenv("VERBUND112_SECRETS_DIR", str(secrets))
    monkeypatch.setenv("VERBUND112_REDIS__PASSWORD", "redis-from-the-environment")

    settings = load_settings(config)

    assert settings.ami.port == 6000  # the file still counts
    assert settings.ami.secret.get_secret_value() == "ami-from-a-file"  # the trailing newline is not part of it
    assert settings.fastagi.secret is not None
    assert settings.fastagi.secret.get_secret_value() == "fastagi-from-a-file-0123"
    (token,) = settings.web.tokens
    assert (token.get_secret_value(), settings.web.tokens[token].role) == ("a-long-random-admin-token-0123", "admin")
    assert settings.redis.password.get_secret_value() == "redis-from-the-environment"  # environment beats file


def test_a_missing_secrets_folder_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VERBUND112_SECRETS_DIR", str(tmp_path / "none"))
    with pytest.raises(FileNotFoundError, match="VERBUND112_SECRETS_DIR"):
        load_settings()
