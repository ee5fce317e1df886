"""chain.settings: environment, defaults, factory behaviour, secrets hidden."""

from __future__ import annotations

from pathlib import Path

import pytest

from chain.settings import Settings, get_settings, mask_url_password

ALL_VARS = [
    "HOME", "DATABASE_URL", "RPC_URL", "PRIVATE_KEY", "KEYSTORE", "KEYSTORE_PASSWORD",
    "CONFIRMATIONS", "PUBLIC_URL", "MASTER_KEY", "REDIS_URL", "EXPLORER_URL", "CHAIN_ID",
]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for name in ALL_VARS:
        monkeypatch.delenv("CARDPROOF_" + name, raising=False)
    monkeypatch.chdir(tmp_path)


def test_defaults(tmp_path):
    from chain.home import default_home

    s = get_settings()
    # The per-user data folder, whatever the current directory (the fixture changed into tmp_path).
    assert s.home == default_home() and not str(s.home).startswith(str(tmp_path))
    assert s.database_url is None
    assert s.effective_database_url == f"sqlite:///{default_home() / 'cardproof.db'}"
    assert s.master_key_path == default_home() / "master.key"
    assert s.confirmations == 0
    assert s.public_url == "http://127.0.0.1:8000"
    for name in ("rpc_url", "private_key", "keystore", "keystore_password", "master_key",
                 "redis_url", "explorer_url", "chain_id"):
        assert getattr(s, name) is None


def test_reads_prefixed_env_each_call(monkeypatch, tmp_path):
    monkeypatch.setenv("CARDPROOF_HOME", str(tmp_path / "h"))
    monkeypatch.setenv("CARDPROOF_CONFIRMATIONS", "3")
    monkeypatch.setenv("CARDPROOF_CHAIN_ID", "31337")
    monkeypatch.setenv("CARDPROOF_DATABASE_URL", "postgresql://u@db/x")
    s = get_settings()
    assert s.home == tmp_path / "h"
    assert (s.confirmations, s.chain_id) == (3, 31337)
    assert s.effective_database_url == "postgresql://u@db/x"
    # A factory, not a cached singleton: a changed environment is seen.
    monkeypatch.setenv("CARDPROOF_CONFIRMATIONS", "7")
    monkeypatch.delenv("CARDPROOF_DATABASE_URL")
    s2 = get_settings()
    assert s2.confirmations == 7
    assert s2.effective_database_url.startswith("sqlite:///")
    assert get_settings(confirmations=1).confirmations == 1  # overrides win


def test_blank_values_are_none(monkeypatch):
    monkeypatch.setenv("CARDPROOF_DATABASE_URL", "")
    monkeypatch.setenv("CARDPROOF_MASTER_KEY", " ")
    s = get_settings()
    assert s.database_url is None and s.master_key is None


def test_no_dotenv_file_is_read(tmp_path):
    (tmp_path / ".env").write_text("CARDPROOF_RPC_URL=http://from-dotenv\n")
    assert get_settings().rpc_url is None


def test_invalid_values_rejected(monkeypatch):
    monkeypatch.setenv("CARDPROOF_CONFIRMATIONS", "-1")
    with pytest.raises(ValueError):
        get_settings()


def test_secrets_never_shown(monkeypatch):
    secrets = {
        "CARDPROOF_PRIVATE_KEY": "0x" + "ab" * 32,
        "CARDPROOF_KEYSTORE_PASSWORD": "hunter2-keystore",
        "CARDPROOF_MASTER_KEY": "cd" * 32,
    }
    for k, v in secrets.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("CARDPROOF_DATABASE_URL", "postgresql://alice:s3cretpw@db:5432/x")
    monkeypatch.setenv("CARDPROOF_REDIS_URL", "redis://:redispw@localhost:6379/0")
    s = get_settings()
    shown = repr(s) + str(s) + repr(s.private_key) + str(s.master_key) + repr(s.model_dump())
    for v in [*secrets.values(), "s3cretpw", "redispw"]:
        assert v not in repr(s) and v not in str(s), v
    assert "ab" * 32 not in shown and "cd" * 32 not in shown
    # values remain available on purpose
    assert s.master_key.get_secret_value() == "cd" * 32
    assert s.effective_database_url == "postgresql://alice:s3cretpw@db:5432/x"


def test_mask_url_password():
    assert mask_url_password("postgresql://u:p@h/db") == "postgresql://u:***@h/db"
    assert mask_url_password("redis://:p@h:1/0") == "redis://:***@h:1/0"
    assert mask_url_password("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"
    assert mask_url_password("http://h:8545") == "http://h:8545"


def test_home_tilde_expanded(monkeypatch):
    monkeypatch.setenv("CARDPROOF_HOME", "~/cp")
    assert get_settings().home == Path("~/cp").expanduser()
    assert isinstance(get_settings(), Settings)
