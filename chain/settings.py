"""Runtime settings of cardproof, read from ``CARDPROOF_*`` environment variables.

Nothing is read at import time: call :func:`get_settings` whenever settings are
needed.  It builds a fresh :class:`Settings` on every call (it is a factory, not a
cached singleton), so tests can change the environment with ``monkeypatch`` and
callers can pass explicit overrides::

    settings = get_settings()                      # from the environment
    settings = get_settings(home=tmp_path)         # keyword overrides win over env

No ``.env`` file is read.  Secret values (private key, keystore password, master
key) are :class:`pydantic.SecretStr`: they print as ``'**********'`` in ``repr``
and ``str`` and must be unwrapped explicitly with ``.get_secret_value()``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from chain.home import default_home, describe_home

__all__ = ["ENV_PREFIX", "Settings", "default_home", "describe_home", "get_settings", "mask_url_password"]

ENV_PREFIX = "CARDPROOF_"


_URL_PASSWORD = re.compile(r"^(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/?#@]*):[^@/?#]*@")
_URL_FIELDS = ("database_url", "public_database_url", "rpc_url", "redis_url", "explorer_url", "public_url")


def mask_url_password(url: str) -> str:
    """``scheme://user:secret@host/...`` -> ``scheme://user:***@host/...``."""
    return _URL_PASSWORD.sub(lambda m: m.group("head") + ":***@", url)


class Settings(BaseSettings):
    """All of cardproof's configuration; every field maps to ``CARDPROOF_<FIELD>``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=None,
        case_sensitive=False,
        extra="ignore",
        validate_default=True,
    )

    #: Folder holding the local state: the SQLite databases, the master key file, deployments, the local chain.
    #: Unset: the user's data folder (:func:`default_home`), never the current directory.
    home: Path = Field(default_factory=default_home)
    #: SQLAlchemy URL of the supplier's database; ``None`` means ``sqlite:///{home}/cardproof.db``.
    database_url: str | None = None
    #: SQLAlchemy URL of the public service's database; ``None`` means ``sqlite:///{home}/public.db``.
    public_database_url: str | None = None
    #: JSON-RPC endpoint of the EVM node.
    rpc_url: str | None = None
    #: Seconds one JSON-RPC request may take; a frozen node costs a lookup at most this (chain/rpc.py).
    rpc_timeout: float = Field(default=5.0, gt=0, le=600)
    #: Extra attempts after a refused connection or HTTP 429/502/503/504 (never after a time-out).
    rpc_retries: int = Field(default=2, ge=0, le=10)
    #: Consecutive failures after which requests to the node fail fast (one time-out is enough).
    rpc_breaker_failures: int = Field(default=3, ge=1, le=100)
    #: Seconds requests fail fast once the breaker opened, before one request probes the node again.
    rpc_breaker_cooldown: float = Field(default=5.0, ge=0, le=3600)
    #: Seconds a transaction may wait for its account's nonce lock (held by other processes) before failing.
    nonce_lock_timeout: float = Field(default=60.0, gt=0, le=3600)
    #: Hex private key of the signing account (alternative to ``keystore``).
    private_key: SecretStr | None = None
    #: Path to an encrypted JSON keystore of the signing account.
    keystore: Path | None = None
    keystore_password: SecretStr | None = None
    #: Blocks to wait on top of the block holding a transaction before trusting it.
    confirmations: int = Field(default=0, ge=0)
    #: Base URL of the public verification site (printed in QR codes).
    public_url: str = "http://127.0.0.1:8000"
    #: 32-byte master key, as 64 hex chars or urlsafe base64; ``None`` means the key file.
    master_key: SecretStr | None = None
    redis_url: str | None = None
    #: Block explorer base URL, used to build links to transactions.
    explorer_url: str | None = None
    #: Expected chain id; ``None`` means whatever the node reports.
    chain_id: int | None = None

    @field_validator("home", mode="after")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        return value.expanduser()

    @field_validator("database_url", "public_database_url", "rpc_url", "redis_url", "explorer_url", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("private_key", "keystore_password", "master_key", "keystore", mode="before")
    @classmethod
    def _blank_secret_is_none(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("private_key", mode="after")
    @classmethod
    def _check_private_key(cls, value: SecretStr | None) -> SecretStr | None:
        # 32 bytes in the secp256k1 range, or one line (PrivateKeyError, not a ValidationError: that would echo it).
        if value is not None:
            from chain.private_keys import parse_private_key

            parse_private_key(value.get_secret_value(), f"{ENV_PREFIX}PRIVATE_KEY")
        return value

    def __repr_args__(self):  # type: ignore[override]
        # SecretStr fields already print as '**********'; also hide passwords
        # embedded in URLs (postgresql://user:password@host/db).
        for name, value in super().__repr_args__():
            if name in _URL_FIELDS and isinstance(value, str):
                value = mask_url_password(value)
            yield name, value

    @property
    def effective_database_url(self) -> str:
        """The database URL to use: ``database_url`` or the SQLite file in ``home``."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.home / 'cardproof.db'}"

    @property
    def effective_public_database_url(self) -> str:
        """The public service's database URL: ``public_database_url`` or ``public.db`` in ``home``."""
        if self.public_database_url:
            return self.public_database_url
        return f"sqlite:///{self.home / 'public.db'}"

    @property
    def master_key_path(self) -> Path:
        """Where the master key file lives when ``master_key`` is not set."""
        return self.home / "master.key"


def get_settings(**overrides: Any) -> Settings:
    """Build settings from the environment now; keyword ``overrides`` take precedence."""
    return Settings(**overrides)
